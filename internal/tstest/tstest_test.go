package tstest

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		err := Poll(time.Minute, func() error {
			calls++
			if time.Since(start) < time.Second {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Poll: %v", err)
		}
		if calls < 2 {
			t.Fatalf("cond called %d times, want a retry", calls)
		}
	})
}

func TestPollGivesUpWithTheLastError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sentinel := errors.New("still missing")
		err := Poll(10*time.Second, func() error { return sentinel })
		if !errors.Is(err, sentinel) {
			t.Fatalf("Poll = %v, want the condition's error", err)
		}
	})
}
