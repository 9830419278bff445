package relay

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Send queues: concurrent sends to one relay share streams and frames.
const (
	// streamsPerRelay bounds the store streams open to one relay at a
	// time: the workers of its send queue.
	streamsPerRelay = 4
	// queueIdleTimeout is how long a relay's send queue stays unused
	// before it is released: its workers exit and it leaves the map.
	queueIdleTimeout = time.Hour
)

// sendQueue is the queue of store jobs to one relay, served by
// streamsPerRelay workers.
type sendQueue struct {
	jobs chan *storeJob
	// closed is closed when the queue is released or the service stops;
	// the workers then answer what is queued and exit.
	closed  chan struct{}
	workers sync.WaitGroup
	// users counts the storeQueued calls on the queue and last is when
	// the latest of them ended; both guarded by Service.mu.
	users int
	last  time.Time
}

// storeJob is a batch of envelopes waiting for a stream to their relay.
type storeJob struct {
	envs []Envelope
	errs []error
	done chan struct{}
}

// answer gives every envelope of j the error err.
func (j *storeJob) answer(err error) {
	j.errs = failAll(len(j.envs), err)
	close(j.done)
}

// failAll is n copies of err.
func failAll(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// storeQueued writes envs to relay p through its queue: concurrent sends
// to one relay share streams and frames (at most streamsPerRelay streams
// at a time), as the relay's group commit shares its fsyncs. It returns
// once the relay answered, ctx ended, or the queue was closed.
func (s *Service) storeQueued(ctx context.Context, p peer.ID, envs []Envelope) []error {
	q := s.useQueue(p)
	if q == nil {
		return failAll(len(envs), ErrStopped)
	}
	defer s.leaveQueue(q)
	j := &storeJob{envs: envs, done: make(chan struct{})}
	select {
	case q.jobs <- j:
	case <-q.closed:
		return failAll(len(envs), ErrStopped)
	case <-ctx.Done():
		return failAll(len(envs), ctx.Err())
	}
	select {
	case <-j.done:
		return j.errs
	case <-q.closed:
		// The workers answer the jobs they took and those left queued
		// before they exit; j may have come in after them.
		q.workers.Wait()
		select {
		case <-j.done:
			return j.errs
		default:
			return failAll(len(envs), ErrStopped)
		}
	case <-ctx.Done():
		return failAll(len(envs), ctx.Err())
	}
}

// useQueue returns p's send queue, made with its workers on first use,
// and counts a user of it; nil once the service stops.
func (s *Service) useQueue(p peer.ID) *sendQueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queuesClosed {
		return nil
	}
	q := s.queues[p]
	if q == nil {
		q = &sendQueue{jobs: make(chan *storeJob, maxQueuedOps), closed: make(chan struct{}), last: time.Now()}
		for range streamsPerRelay {
			q.workers.Add(1)
			if !s.life.Go(func() { s.storeWorker(p, q) }) {
				q.workers.Done()
			}
		}
		s.queues[p] = q
	}
	q.users++
	return q
}

// leaveQueue ends a use of q.
func (s *Service) leaveQueue(q *sendQueue) {
	s.mu.Lock()
	q.users--
	q.last = time.Now()
	s.mu.Unlock()
}

// releaseIdle releases p's queue q when nobody used it for
// queueIdleTimeout.
func (s *Service) releaseIdle(p peer.ID, q *sendQueue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queues[p] != q || q.users > 0 || time.Since(q.last) < queueIdleTimeout {
		return
	}
	delete(s.queues, p)
	close(q.closed)
	s.log.Debug("released idle send queue", "relay", p.String())
}

// closeQueues closes every send queue; later sends to other relays fail
// with ErrStopped.
func (s *Service) closeQueues() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queuesClosed {
		return
	}
	s.queuesClosed = true
	for p, q := range s.queues {
		close(q.closed)
		delete(s.queues, p)
	}
}

// storeWorker sends the jobs of q to relay p, batching those that wait,
// until q is closed; it then answers the jobs left with ErrStopped.
func (s *Service) storeWorker(p peer.ID, q *sendQueue) {
	defer q.workers.Done()
	defer func() {
		for {
			select {
			case j := <-q.jobs:
				j.answer(ErrStopped)
			default:
				return
			}
		}
	}()
	idle := time.NewTimer(queueIdleTimeout)
	defer idle.Stop()
	for {
		var jobs []*storeJob
		select {
		case j := <-q.jobs:
			jobs = append(jobs, j)
		case <-q.closed:
			return
		case <-idle.C:
			s.releaseIdle(p, q)
			idle.Reset(queueIdleTimeout)
			continue
		}
		s.sendJobs(p, q, jobs)
		idle.Reset(queueIdleTimeout)
	}
}

// sendJobs sends jobs, and those waiting behind them in q, to relay p in
// frame-sized runs and answers each.
func (s *Service) sendJobs(p peer.ID, q *sendQueue, jobs []*storeJob) {
	n, size := len(jobs[0].envs), batchSize(jobs[0].envs)
drain:
	for n < MaxBatch {
		select {
		case j := <-q.jobs:
			jobs = append(jobs, j)
			n += len(j.envs)
			size += batchSize(j.envs)
			if n >= MaxBatch || size >= batchBytes/2 {
				break drain
			}
		default:
			break drain
		}
	}
	// A drained job may overflow the frame: send in frame-sized runs.
	for len(jobs) > 0 {
		run, count, bytes := 1, len(jobs[0].envs), batchSize(jobs[0].envs)
		for run < len(jobs) && count+len(jobs[run].envs) <= MaxBatch && bytes+batchSize(jobs[run].envs) <= batchBytes {
			count += len(jobs[run].envs)
			bytes += batchSize(jobs[run].envs)
			run++
		}
		var all []Envelope
		for _, j := range jobs[:run] {
			all = append(all, j.envs...)
		}
		errs := s.storeRemote(s.ctx, p, msgStore, ident.DeviceID{}, all)
		for _, j := range jobs[:run] {
			j.errs, errs = errs[:len(j.envs)], errs[len(j.envs):]
			close(j.done)
		}
		jobs = jobs[run:]
	}
}

func batchSize(envs []Envelope) int {
	n := 0
	for _, e := range envs {
		n += frameSize(e)
	}
	return n
}
