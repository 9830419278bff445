package keyregistry

// This file holds every periodic loop of the package: the registry's
// republish and sweep loops (on the shared service.Every) and the anchoring loop (on its batch interval, woken
// early by a full queue, with a retry delay after a failure).

import (
	"time"

	"github.com/volo-chat/volo/internal/service"
)

// SweepInterval is how often expired nonces, logins and mailboxes are
// dropped (they are also dropped whenever they are looked at).
const SweepInterval = time.Minute

// republishLoop puts every stored chain in the DHT again each
// RepublishInterval.
func (s *Service) republishLoop() {
	service.Every(s.ctx, s.cfg.RepublishInterval.Std(), func() {
		n, _ := s.Republish(s.ctx)
		s.log.Info("republished chains", "count", n)
	})
}

// sweepLoop drops expired nonces, logins and mailboxes each SweepInterval.
func (s *Service) sweepLoop() {
	service.Every(s.ctx, SweepInterval, func() {
		s.nonces.Len()
		s.rendezvous.Len()
		s.logins.mu.Lock()
		s.logins.sweep(time.Now())
		s.logins.mu.Unlock()
	})
}

// loop anchors what waits and checks the watched anchors each
// BatchInterval, or as soon as BatchMaxLinks links wait; after a failure it
// tries again in AnchorRetryDelay.
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
