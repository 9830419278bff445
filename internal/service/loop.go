package service

import (
	"context"
	"time"
)

// Every calls fn every interval, the first time one interval from now,
// until ctx ends. A call of fn that outlasts the interval is followed at
// once by one more call; the other ticks missed meanwhile are dropped, not
// queued.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
