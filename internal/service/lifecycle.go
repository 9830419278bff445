// Package service is the skeleton the node's network services share: the
// stop/enter lifecycle, the periodic loop, the length-prefixed stream round
// trip with its error codes, and the group committer of badger writes.
package service

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Lifecycle tracks what a service runs between its construction and Stop:
// its goroutines and the requests it serves, all of which see the context
// it hands out end when Stop begins. Build one with NewLifecycle.
type Lifecycle struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
}

// NewLifecycle returns a running lifecycle. It starts nothing.
func NewLifecycle() *Lifecycle {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lifecycle{ctx: ctx, cancel: cancel}
}

// Context lives until Stop begins.
func (l *Lifecycle) Context() context.Context { return l.ctx }

// Stopped reports whether Stop has begun.
func (l *Lifecycle) Stopped() bool { return l.ctx.Err() != nil }

// Enter registers work in flight (a request being served) that Stop waits
// for; it reports false once Stop has begun, and the work must then not
// start. Each Enter that returns true is matched by one Leave.
func (l *Lifecycle) Enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.wg.Add(1)
	return true
}

// Leave ends work registered by Enter.
func (l *Lifecycle) Leave() { l.wg.Done() }

// Go runs fn in a goroutine that Stop waits for. It reports false, and
// does not run fn, once Stop has begun.
func (l *Lifecycle) Go(fn func()) bool {
	if !l.Enter() {
		return false
	}
	go func() {
		defer l.Leave()
		fn()
	}()
	return true
}

// Every runs fn every interval, in a goroutine, until Stop (see Every).
func (l *Lifecycle) Every(interval time.Duration, fn func()) bool {
	return l.Go(func() { Every(l.ctx, interval, fn) })
}

// Stop ends the context and waits for the work entered and the
// goroutines started. It reports whether this call stopped the lifecycle:
// false when an earlier call did.
func (l *Lifecycle) Stop() bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.stopped = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return true
}

// Handler wraps a stream handler into one that serves each stream as work
// in flight: a stream that arrives once Stop has begun is reset, a stream
// being served is reset when Stop begins (Stop does not wait for slow
// peers), and the stream is closed when h returns.
func (l *Lifecycle) Handler(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		if !l.Enter() {
			st.Reset()
			return
		}
		defer l.Leave()
		defer st.Close()
		defer context.AfterFunc(l.ctx, func() { st.Reset() })()
		h(st)
	}
}
