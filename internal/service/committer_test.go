package service

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
)

var errClosed = errors.New("closed")

type testOp struct {
	n      int // weight
	result int // set by the commit
}

// recorder commits ops by giving each its batch number, and can hold a
// commit until released.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{}
	fail    error
}

func (r *recorder) commit(batch []*testOp) error {
	if r.hold != nil {
		<-r.hold
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ws []int
	for _, o := range batch {
		ws = append(ws, o.n)
		o.result = len(r.batches) + 1
	}
	r.batches = append(r.batches, ws)
	return r.fail
}

func newTestCommitter(r *recorder, maxOps, maxWeight int) *Committer[*testOp] {
	return NewCommitter(CommitterConfig[*testOp]{
		Commit: r.commit, Queue: 64, MaxOps: maxOps, MaxWeight: maxWeight,
		Weight: func(o *testOp) int { return o.n }, Closed: errClosed,
	})
}

// Writes that arrive while a commit runs share the next commit, within
// the batch limits; each write sees its own result.
func TestCommitterBatchesWaitingWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{hold: make(chan struct{})}
		c := newTestCommitter(r, 3, 10)
		c.Start()
		defer c.Close()
		first := &testOp{n: 1}
		go c.Submit(context.Background(), first)
		synctest.Wait() // the first commit holds
		ops := []*testOp{{n: 1}, {n: 1}, {n: 1}, {n: 1}, {n: 9}, {n: 5}}
		var wg sync.WaitGroup
		for _, o := range ops {
			wg.Go(func() {
				if err := c.Submit(context.Background(), o); err != nil {
					t.Errorf("Submit: %v", err)
				}
			})
			synctest.Wait() // in order
		}
		close(r.hold)
		wg.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		// MaxOps ends the second batch, MaxWeight the third.
		want := [][]int{{1}, {1, 1, 1}, {1, 9}, {5}}
		if !slices.EqualFunc(r.batches, want, slices.Equal) {
			t.Fatalf("batches %v, want %v", r.batches, want)
		}
		if first.result != 1 || ops[0].result != 2 || ops[5].result != 4 {
			t.Fatalf("results %d %d %d", first.result, ops[0].result, ops[5].result)
		}
	})
}

// A failed commit is every write's error.
func TestCommitterError(t *testing.T) {
	boom := errors.New("boom")
	r := &recorder{fail: boom}
	c := newTestCommitter(r, 0, 0)
	c.Start()
	defer c.Close()
	if err := c.Submit(t.Context(), &testOp{n: 1}); !errors.Is(err, boom) {
		t.Fatalf("Submit = %v, want %v", err, boom)
	}
}

// Before Start a write fails at once; Close may come before Start and
// twice; writes after Close, and writes queued when it came, fail with the
// configured error and never hang.
func TestCommitterStartAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{hold: make(chan struct{})}
		c := newTestCommitter(r, 1, 0)
		if err := c.Submit(context.Background(), &testOp{n: 1}); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("Submit before Start = %v", err)
		}
		c.Start()
		c.Start()
		errs := make(chan error, 3)
		for range 3 {
			go func() { errs <- c.Submit(context.Background(), &testOp{n: 1}) }()
		}
		synctest.Wait() // one commit holds, two writes queued
		go func() {
			synctest.Wait()
			close(r.hold)
		}()
		c.Close()
		c.Close()
		var got []error
		for range 3 {
			got = append(got, <-errs)
		}
		ok, closed := 0, 0
		for _, err := range got {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, errClosed):
				closed++
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		if ok != 1 || closed != 2 {
			t.Fatalf("%d committed and %d closed, want the commit in progress and 2 closed", ok, closed)
		}
		if err := c.Submit(context.Background(), &testOp{n: 1}); !errors.Is(err, errClosed) {
			t.Fatalf("Submit after Close = %v", err)
		}
		c2 := newTestCommitter(&recorder{}, 0, 0)
		c2.Close()
		c2.Start()
		if err := c2.Submit(context.Background(), &testOp{n: 1}); !errors.Is(err, errClosed) {
			t.Fatalf("Submit after Close before Start = %v", err)
		}
	})
}
