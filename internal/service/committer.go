package service

import (
	"context"
	"errors"
	"sync"
)

// ErrNotStarted reports a write submitted to a committer before Start.
var ErrNotStarted = errors.New("service: committer not started")

// CommitterConfig is what a Committer commits and how it batches.
type CommitterConfig[O any] struct {
	// Commit applies a batch of writes, in order, and makes them durable
	// (one fsync for the batch). It writes each write's own results into
	// the write; a non-nil error is the result of every write of the batch.
	Commit func(batch []O) error
	// Queue bounds the writes waiting for the committer.
	Queue int
	// MaxOps bounds the writes of one batch (0: no bound but MaxWeight).
	MaxOps int
	// Weight is a write's share of MaxWeight (nil: 1 each).
	Weight func(O) int
	// MaxWeight bounds the summed weight of a batch: a batch takes more
	// writes while it weighs less (0: no bound but MaxOps).
	MaxWeight int
	// Closed is the error of writes submitted after Close, and of writes
	// Close dropped from the queue.
	Closed error
}

// Committer is a group committer: every write goes through one goroutine,
// in order, so writes never conflict, and the writes that arrive while a
// batch commits share the next batch and its fsync. Its goroutine runs from
// Start to Close.
type Committer[O any] struct {
	cfg      CommitterConfig[O]
	jobs     chan *job[O]
	stop     chan struct{}
	start    sync.Once
	started  chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

type job[O any] struct {
	op   O
	err  error
	done chan struct{}
}

// NewCommitter returns a committer that commits nothing until Start.
func NewCommitter[O any](cfg CommitterConfig[O]) *Committer[O] {
	return &Committer[O]{cfg: cfg, jobs: make(chan *job[O], max(1, cfg.Queue)), stop: make(chan struct{}), started: make(chan struct{})}
}

// Start starts the committer's goroutine. Calls after the first, and calls
// after Close, do nothing.
func (c *Committer[O]) Start() {
	c.start.Do(func() {
		select {
		case <-c.stop:
			return
		default:
		}
		c.wg.Add(1)
		close(c.started)
		go c.loop()
	})
}

// Close stops the committer after the batch in progress and waits for it.
// Writes still queued fail with cfg.Closed. Close may be called more than
// once, and before Start.
func (c *Committer[O]) Close() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// Submit hands op to the committer and waits until its batch is committed,
// returning the batch's error. ctx bounds the wait for room in the queue
// only: a write being committed is not abandoned half-way.
func (c *Committer[O]) Submit(ctx context.Context, op O) error {
	select {
	case <-c.stop:
		return c.cfg.Closed
	default:
	}
	select {
	case <-c.started:
	default:
		return ErrNotStarted
	}
	j := &job[O]{op: op, done: make(chan struct{})}
	select {
	case c.jobs <- j:
	case <-c.stop:
		return c.cfg.Closed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-j.done:
		return j.err
	case <-c.stop:
		// Close waits for the committer, which finishes j or drops it.
		c.wg.Wait()
		select {
		case <-j.done:
			return j.err
		default:
			return c.cfg.Closed
		}
	}
}

// Queued is the number of writes waiting for the committer.
func (c *Committer[O]) Queued() int { return len(c.jobs) }

func (c *Committer[O]) weight(o O) int {
	if c.cfg.Weight == nil {
		return 1
	}
	return c.cfg.Weight(o)
}

// full reports whether a batch of n writes weighing w takes no more.
func (c *Committer[O]) full(n, w int) bool {
	return (c.cfg.MaxOps > 0 && n >= c.cfg.MaxOps) || (c.cfg.MaxWeight > 0 && w >= c.cfg.MaxWeight)
}

func (c *Committer[O]) loop() {
	defer c.wg.Done()
	var jobs []*job[O]
	var ops []O
	for {
		jobs, ops = jobs[:0], ops[:0]
		select {
		case <-c.stop: // before more queued writes
			return
		default:
		}
		select {
		case j := <-c.jobs:
			jobs = append(jobs, j)
		case <-c.stop:
			return
		}
		w := c.weight(jobs[0].op)
	drain:
		for !c.full(len(jobs), w) {
			select {
			case j := <-c.jobs:
				jobs = append(jobs, j)
				w += c.weight(j.op)
			default:
				break drain
			}
		}
		for _, j := range jobs {
			ops = append(ops, j.op)
		}
		err := c.cfg.Commit(ops)
		for _, j := range jobs {
			j.err = err
			close(j.done)
		}
		clear(jobs)
		clear(ops)
	}
}
