package service

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Stop ends the context, waits for the work entered and the goroutines,
// and refuses new work; a second Stop does nothing.
func TestLifecycleStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLifecycle()
		if !l.Enter() {
			t.Fatal("Enter refused before Stop")
		}
		var slowDone, goDone atomic.Bool
		go func() {
			defer l.Leave()
			time.Sleep(time.Minute)
			slowDone.Store(true)
		}()
		l.Go(func() {
			<-l.Context().Done()
			goDone.Store(true)
		})
		if !l.Stop() {
			t.Fatal("first Stop reported false")
		}
		if !slowDone.Load() || !goDone.Load() {
			t.Fatal("Stop returned before the work in flight ended")
		}
		if !l.Stopped() || l.Context().Err() == nil {
			t.Fatal("context alive after Stop")
		}
		if l.Enter() || l.Go(func() { t.Error("ran after Stop") }) {
			t.Fatal("work accepted after Stop")
		}
		if l.Stop() {
			t.Fatal("second Stop reported true")
		}
	})
}

// fakeStream records how it ended; a read on it waits for Reset.
type fakeStream struct {
	network.Stream
	reset, closed atomic.Bool
	once          sync.Once
	resetCh       chan struct{}
}

func newFakeStream() *fakeStream { return &fakeStream{resetCh: make(chan struct{})} }

func (s *fakeStream) Reset() error {
	s.reset.Store(true)
	s.once.Do(func() { close(s.resetCh) })
	return nil
}

func (s *fakeStream) Read([]byte) (int, error) {
	<-s.resetCh
	return 0, network.ErrReset
}
func (s *fakeStream) Close() error { s.closed.Store(true); return nil }

// A stream served by Handler is closed when the handler returns, reset
// when Stop begins, and reset unserved once stopped.
func TestLifecycleHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLifecycle()
		var served atomic.Int32
		h := l.Handler(func(network.Stream) { served.Add(1) })
		quick := newFakeStream()
		h(quick)
		if served.Load() != 1 || !quick.closed.Load() || quick.reset.Load() {
			t.Fatalf("quick stream: served %d, closed %v, reset %v", served.Load(), quick.closed.Load(), quick.reset.Load())
		}
		slow := newFakeStream()
		blocked := l.Handler(func(st network.Stream) { st.Read(nil) })
		go blocked(slow)
		synctest.Wait()
		l.Stop()
		if !slow.reset.Load() || !slow.closed.Load() {
			t.Fatalf("slow stream at Stop: reset %v, closed %v", slow.reset.Load(), slow.closed.Load())
		}
		late := newFakeStream()
		h(late)
		if served.Load() != 1 || !late.reset.Load() {
			t.Fatalf("stream after Stop: served %d, reset %v", served.Load(), late.reset.Load())
		}
	})
}
