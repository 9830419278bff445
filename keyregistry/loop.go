package keyregistry

import (
	"context"
	"time"
)

// SweepInterval is how often expired nonces, logins and mailboxes are
// dropped (they are also dropped whenever they are looked at).
const SweepInterval = time.Minute

func (s *Service) republishLoop() {
	every(s.ctx, s.cfg.RepublishInterval.Std(), func() {
		n, _ := s.Republish(s.ctx)
		s.log.Info("republished chains", "count", n)
	})
}

func (s *Service) sweepLoop() {
	every(s.ctx, SweepInterval, func() {
		s.nonces.Len()
		s.rendezvous.Len()
		s.logins.mu.Lock()
		s.logins.sweep(time.Now())
		s.logins.mu.Unlock()
	})
}

func (a *Anchoring) loop() {
	t := time.NewTicker(a.cfg.BatchInterval)
	defer t.Stop()
	for {
		err := a.AnchorPending(a.ctx)
		if err == nil {
			err = a.Watch(a.ctx)
		}
		if a.ctx.Err() != nil {
			return
		}
		wait := t.C
		var retry <-chan time.Time
		if err != nil {
			a.log.Error("anchoring failed; retrying", "err", err, "in", AnchorRetryDelay)
			retry = time.After(AnchorRetryDelay)
			wait = nil
		}
		select {
		case <-a.ctx.Done():
			return
		case <-wait:
		case <-retry:
		case <-a.q.full(a.cfg.BatchMaxLinks):
		}
	}
}

// every runs fn each interval, first one interval from now, until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
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
