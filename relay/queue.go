package relay

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Send queues: concurrent sends to one relay share streams and frames, and
// a relay stores a device's envelopes in the order they were queued.
const (
	// streamsPerRelay bounds the store streams open to one relay at a
	// time: the lanes of its send queue, one worker each.
	streamsPerRelay = 4
	// queueIdleTimeout is how long a relay's send queue stays unused
	// before it is released: its workers exit and it leaves the map.
	queueIdleTimeout = time.Hour
)

// sendQueue is the queue of store jobs to one relay (this node's own
// mailboxes when the relay is this node). Jobs go to one of
// streamsPerRelay lanes by the device they are addressed to; a lane's
// worker sends its jobs in the order they were queued, a frame at a time,
// and waits for the relay's answer before it sends the next. So the relay
// stores each device's envelopes in the order they were queued, even when
// a Send returned (on its quorum) before this relay answered.
type sendQueue struct {
	lanes [streamsPerRelay]sendLane
	// closed is closed when the queue is released or the service stops;
	// the workers then answer what is queued and exit.
	closed  chan struct{}
	workers sync.WaitGroup
	// users counts the queued writes not yet answered (or given up) and
	// last is when the latest of them ended; both guarded by Service.mu.
	users int
	last  time.Time
}

// sendLane is one lane of a send queue: its jobs in order, served by one
// worker.
type sendLane struct {
	mu      sync.Mutex
	jobs    []*storeJob
	stopped bool // no worker serves the lane: jobs are answered ErrStopped
	// wake receives a value when jobs are queued.
	wake chan struct{}
}

// laneOf is the lane of a device's envelopes: the last byte of its ID,
// the end of a SHA-256 digest, spreads devices evenly.
func laneOf(device ident.DeviceID) int {
	b := device.Bytes()
	return int(b[len(b)-1]) % streamsPerRelay
}

// push queues jobs, in order, and wakes the worker; on a stopped lane it
// answers them ErrStopped.
func (l *sendLane) push(jobs []*storeJob) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		for _, j := range jobs {
			j.answer(ErrStopped)
		}
		return
	}
	l.jobs = append(l.jobs, jobs...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the first jobs of l that share one frame: at
// least one, at most MaxBatch envelopes and batchBytes in all.
func (l *sendLane) take() []*storeJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, count, size := 0, 0, 0
	for _, j := range l.jobs {
		if n > 0 && (count+len(j.envs) > MaxBatch || size+j.size > batchBytes) {
			break
		}
		n, count, size = n+1, count+len(j.envs), size+j.size
	}
	taken := slices.Clone(l.jobs[:n])
	clear(l.jobs[:n])
	if l.jobs = l.jobs[n:]; len(l.jobs) == 0 {
		l.jobs = nil
	}
	return taken
}

// stop marks l stopped and answers its queued jobs ErrStopped.
func (l *sendLane) stop() {
	l.mu.Lock()
	jobs := l.jobs
	l.jobs, l.stopped = nil, true
	l.mu.Unlock()
	for _, j := range jobs {
		j.answer(ErrStopped)
	}
}

// storeJob is a frame's worth of envelopes, all of one lane, waiting to
// be stored on a relay.
type storeJob struct {
	envs []Envelope
	at   []int // where each envelope is in its storeWrite
	size int   // the frame bytes of envs (frameSize)
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

// storeWrite is a write of envelopes to one relay, queued by queueStore.
type storeWrite struct {
	q    *sendQueue // nil when the service had stopped
	n    int
	jobs []*storeJob
}

// queueStore queues envs for relay p (the local mailboxes when p is this
// node) and returns without waiting: writes queued one after the other
// reach p in that order, for each device. Wait for the answers with
// waitStore.
func (s *Service) queueStore(p peer.ID, envs []Envelope) *storeWrite {
	w := &storeWrite{n: len(envs)}
	if w.q = s.useQueue(p); w.q == nil {
		return w
	}
	// The jobs of each lane, the last one open while it has room.
	var byLane [streamsPerRelay][]*storeJob
	for i, e := range envs {
		l := laneOf(e.To)
		jobs := byLane[l]
		n := frameSize(e)
		if len(jobs) == 0 || len(jobs[len(jobs)-1].envs) == MaxBatch || jobs[len(jobs)-1].size+n > batchBytes {
			jobs = append(jobs, &storeJob{done: make(chan struct{})})
		}
		j := jobs[len(jobs)-1]
		j.envs, j.at, j.size = append(j.envs, e), append(j.at, i), j.size+n
		byLane[l] = jobs
	}
	for l, jobs := range byLane {
		if len(jobs) > 0 {
			w.q.lanes[l].push(jobs)
			w.jobs = append(w.jobs, jobs...)
		}
	}
	return w
}

// waitStore waits for the answers to w, or for ctx to end, and returns
// one error per envelope, nil where it is on disk.
func (s *Service) waitStore(ctx context.Context, w *storeWrite) []error {
	if w.q == nil {
		return failAll(w.n, ErrStopped)
	}
	defer s.leaveQueue(w.q)
	errs := make([]error, w.n)
	for _, j := range w.jobs {
		select {
		case <-j.done:
			for k, i := range j.at {
				errs[i] = j.errs[k]
			}
		case <-ctx.Done():
			for _, i := range j.at {
				errs[i] = ctx.Err()
			}
		}
	}
	return errs
}

// storeQueued writes envs to relay p through its queue and returns once
// the relay answered, ctx ended, or the queue was closed.
func (s *Service) storeQueued(ctx context.Context, p peer.ID, envs []Envelope) []error {
	return s.waitStore(ctx, s.queueStore(p, envs))
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
		q = &sendQueue{closed: make(chan struct{}), last: time.Now()}
		for i := range q.lanes {
			l := &q.lanes[i]
			l.wake = make(chan struct{}, 1)
			q.workers.Add(1)
			if !s.life.Go(func() { s.storeWorker(p, q, l) }) {
				q.workers.Done()
				l.stop()
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

// storeWorker sends the jobs of lane l of q to relay p, a frame at a time
// in queue order, until q is closed; it then answers the jobs left with
// ErrStopped.
func (s *Service) storeWorker(p peer.ID, q *sendQueue, l *sendLane) {
	defer q.workers.Done()
	defer l.stop()
	idle := time.NewTimer(queueIdleTimeout)
	defer idle.Stop()
	for {
		select {
		case <-q.closed:
			return
		default:
		}
		if jobs := l.take(); len(jobs) > 0 {
			s.sendJobs(p, jobs)
			idle.Reset(queueIdleTimeout)
			continue
		}
		select {
		case <-l.wake:
		case <-q.closed:
			return
		case <-idle.C:
			s.releaseIdle(p, q)
			idle.Reset(queueIdleTimeout)
		}
	}
}

// sendJobs stores jobs, which share one frame, on relay p (the local
// mailboxes when p is this node) and answers each.
func (s *Service) sendJobs(p peer.ID, jobs []*storeJob) {
	var all []Envelope
	for _, j := range jobs {
		all = append(all, j.envs...)
	}
	var errs []error
	if p == s.host.ID() {
		errs = s.storeLocal(s.ctx, all)
	} else {
		errs = s.storeRemote(s.ctx, p, msgStore, ident.DeviceID{}, all, nil)
	}
	for _, j := range jobs {
		j.errs, errs = errs[:len(j.envs)], errs[len(j.envs):]
		close(j.done)
	}
}
