package service

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Every calls fn once an interval, the first time one interval after it
// starts, and returns once its context ends.
func TestEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var calls atomic.Int32
		done := make(chan struct{})
		go func() {
			defer close(done)
			Every(ctx, time.Minute, func() { calls.Add(1) })
		}()
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 0 {
			t.Fatalf("%d calls before the first interval", n)
		}
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls after two minutes, want 2", n)
		}
		cancel()
		<-done
		time.Sleep(time.Hour)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls after the context ended, want 2", n)
		}
	})
}

// A call that outlasts the interval is followed at once by one more; the
// other missed ticks are dropped, not queued.
func TestEveryDropsMissedTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var at []time.Duration
		start := time.Now()
		go Every(ctx, time.Minute, func() {
			mu.Lock()
			at = append(at, time.Since(start))
			first := len(at) == 1
			mu.Unlock()
			if first {
				time.Sleep(150 * time.Second)
			}
		})
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		want := []time.Duration{time.Minute, 210 * time.Second, 4 * time.Minute, 5 * time.Minute}
		if len(at) != len(want) {
			t.Fatalf("calls at %v, want %v", at, want)
		}
		for i := range want {
			if at[i] != want[i] {
				t.Fatalf("calls at %v, want %v", at, want)
			}
		}
		cancel()
	})
}

// Lifecycle.Every runs until Stop, which waits for it.
func TestLifecycleEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLifecycle()
		var calls atomic.Int32
		l.Every(time.Minute, func() { calls.Add(1) })
		time.Sleep(3*time.Minute + time.Second)
		synctest.Wait()
		l.Stop()
		if n := calls.Load(); n != 3 {
			t.Fatalf("%d calls in three minutes, want 3", n)
		}
		if l.Every(time.Minute, func() { calls.Add(1) }) {
			t.Fatal("Every started after Stop")
		}
	})
}
