package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Send places each envelope on the relays of its device and returns once
// WriteQuorum of them have it durably, or with the envelope's error. An
// envelope without a TTL gets DefaultTTL. Writes to relays that have not
// answered when Send returns go on in the background. A relay stores a
// device's envelopes in the order of the Sends that carried them, when
// each Send starts after the one before returned, and in order within one
// Send.
func (s *Service) Send(ctx context.Context, envs []Envelope) ([]SendResult, error) {
	if s.ctx.Err() != nil {
		return nil, ErrStopped
	}
	results := make([]SendResult, len(envs))
	envs = slices.Clone(envs)
	byDevice := make(map[string][]int)
	var order []string
	for i := range envs {
		if envs[i].TTL == 0 {
			envs[i].TTL = s.cfg.DefaultTTL.Std()
		}
		if err := envs[i].Check(); err != nil {
			results[i].Err = err
			continue
		}
		if envs[i].TTL > s.cfg.MaxTTL.Std() {
			results[i].Err = fmt.Errorf("%w: TTL %s above %s", wire.ErrBadEnvelope, envs[i].TTL, s.cfg.MaxTTL)
			continue
		}
		if err := envs[i].CheckTime(s.now()); err != nil {
			results[i].Err = err
			continue
		}
		k := string(envs[i].To.Bytes())
		if byDevice[k] == nil {
			order = append(order, k)
		}
		byDevice[k] = append(byDevice[k], i)
	}

	// The writes of each relay, and how many relays each envelope waits on.
	type write struct {
		idx []int
		err []error
	}
	perPeer := make(map[peer.ID][]int)
	need := make([]int, len(envs))
	quorum := make([]int, len(envs))
	for _, k := range order {
		idx := byDevice[k]
		peers, err := s.cachedRelays(ctx, envs[idx[0]].To)
		if err != nil {
			for _, i := range idx {
				results[i].Err = fmt.Errorf("%w: %w", ErrNoQuorum, err)
			}
			continue
		}
		for _, i := range idx {
			need[i], quorum[i] = len(peers), s.quorum(len(peers))
			results[i].Relays = len(peers)
		}
		for _, p := range peers {
			perPeer[p] = append(perPeer[p], idx...)
		}
	}
	// Queue every relay's write before waiting for any: the queues keep
	// the order of Sends made one after the other, also on a relay that
	// answers after the quorum (it still has this write in flight when
	// the next Send starts).
	done := make(chan write, len(perPeer))
	bg := context.WithoutCancel(ctx)
	for p, idx := range perPeer {
		batch := make([]Envelope, len(idx))
		for j, i := range idx {
			batch[j] = envs[i]
		}
		w := s.queueStore(p, batch)
		go func() { done <- write{idx: idx, err: s.waitStore(bg, w)} }()
	}

	// Collect until every envelope has its quorum or all its answers.
	answered := make([]int, len(envs))
	failure := make([]error, len(envs))
	open := 0
	for i := range envs {
		if need[i] > 0 {
			open++
		}
	}
	decided := func(i int) bool { return results[i].Stored >= quorum[i] || answered[i] == need[i] }
	for pending := len(perPeer); open > 0 && pending > 0; pending-- {
		var w write
		select {
		case w = <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for j, i := range w.idx {
			if decided(i) {
				if w.err[j] == nil {
					results[i].Stored++ // a copy beyond the quorum still counts
				}
				answered[i]++
				continue
			}
			answered[i]++
			if w.err[j] == nil {
				results[i].Stored++
			} else if failure[i] == nil || !(errors.Is(failure[i], wire.ErrMailboxFull) || errors.Is(failure[i], wire.ErrRequestsFull)) {
				failure[i] = w.err[j]
			}
			if decided(i) {
				open--
			}
		}
	}
	stored := 0
	for i := range envs {
		if need[i] == 0 || results[i].Err != nil {
			continue
		}
		if results[i].Stored >= quorum[i] {
			stored++
			continue
		}
		switch f := failure[i]; {
		case errors.Is(f, wire.ErrMailboxFull), errors.Is(f, wire.ErrRequestsFull), errors.Is(f, wire.ErrExpired), errors.Is(f, wire.ErrFromFuture), errors.Is(f, wire.ErrBadEnvelope):
			results[i].Err = f
		default:
			results[i].Err = fmt.Errorf("%w: envelope %s stored on %d of %d relays, %d needed (last error: %v)", ErrNoQuorum, envs[i].ID, results[i].Stored, need[i], quorum[i], f)
		}
	}
	s.log.Debug("sent envelopes", "count", len(envs), "stored", stored, "relays", len(perPeer))
	return results, nil
}

func (s *Service) storeLocal(ctx context.Context, envs []Envelope) []error {
	errs := make([]error, len(envs))
	if !s.cfg.Enabled {
		for i := range errs {
			errs[i] = fmt.Errorf("%w: this node is not a relay", ErrRemote)
		}
		return errs
	}
	res, err := s.box.Put(ctx, envs)
	stored := 0
	for i := range errs {
		switch {
		case err != nil:
			errs[i] = err
		case res[i].Err != nil:
			errs[i] = res[i].Err
		case !res[i].Duplicate:
			stored++
		}
	}
	s.met.stored.Add(float64(stored))
	return errs
}

// storeRemote stores envs on relay p with a store or handover frame; a
// handover carries the device's token, if not nil.
func (s *Service) storeRemote(ctx context.Context, p peer.ID, typ uint8, device ident.DeviceID, envs []Envelope, token []byte) []error {
	f, err := storeFrame(typ, device, envs)
	if err != nil {
		return failAll(len(envs), err)
	}
	f.Token = token
	r, err := s.roundTrip(ctx, p, f, msgStoreResult)
	if err != nil {
		s.log.Debug("store on relay failed", "relay", p.String(), "envelopes", len(envs), "err", err)
		return failAll(len(envs), err)
	}
	if len(r.Results) != len(envs) {
		return failAll(len(envs), fmt.Errorf("%w: %d results for %d envelopes", ErrBadFrame, len(r.Results), len(envs)))
	}
	errs := make([]error, len(envs))
	for i, c := range r.Results {
		errs[i] = errOf(c)
	}
	return errs
}

// Ack deletes envelopes on every relay of the device. sig is the device's
// signature (wire.DomainAck) over wire.AckMessage(dev.ID(), refs); this node
// and every relay verify it. Ack succeeds when at least one relay deleted
// or confirmed; the errors of the others are logged.
func (s *Service) Ack(ctx context.Context, dev ident.DevicePublic, refs []wire.EnvelopeRef, sig []byte) error {
	if len(refs) == 0 || len(refs) > MaxAckRefs {
		return fmt.Errorf("%w: %d envelope references, want 1 to %d", ErrBadAck, len(refs), MaxAckRefs)
	}
	if err := verifyAck(dev, refs, sig); err != nil {
		return err
	}
	device := dev.ID()
	peers, err := s.cachedRelays(ctx, device)
	if err != nil {
		return err
	}
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			if p == s.host.ID() {
				if !s.cfg.Enabled {
					errs[i] = fmt.Errorf("%w: this node is not a relay", ErrRemote)
					return
				}
				n, err := s.box.Ack(device, refs)
				s.met.acked.Add(float64(n))
				errs[i] = err
				return
			}
			_, errs[i] = s.roundTrip(ctx, p, ackFrame(dev, refs, sig), msgAckResult)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
		} else {
			s.log.Debug("ack on relay failed", "relay", peers[i].String(), "device", device.String(), "err", err)
		}
	}
	if ok == 0 {
		return fmt.Errorf("relay: ack on no relay: %w", errors.Join(errs...))
	}
	return nil
}
