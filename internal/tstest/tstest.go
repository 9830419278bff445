// Package tstest holds helpers shared by Volo's tests, with no dependency on
// the rest of the module so that every package's tests can use them.
package tstest

import (
	"fmt"
	"testing"
	"time"
)

// Poll intervals of WaitFor: the first retry comes quickly, later ones back
// off so a slow condition does not spin.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// WaitFor calls cond until it returns nil and fails the test with cond's last
// error if that has not happened within timeout. The timeout is a hang
// guard, not an assertion about speed: give it generously.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// Poll is WaitFor for callers that handle the failure themselves: it
// returns nil once cond does, or cond's last error wrapped with the time
// waited.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	wait := firstPoll
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %v: %w", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, maxPoll)
	}
}
