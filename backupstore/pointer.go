package backupstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// provideLoop announces newly stored chunks in the DHT.
func (s *Service) provideLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case c := <-s.provide:
			s.announce(s.ctx, c)
		}
	}
}

func (s *Service) announce(ctx context.Context, c cid.Cid) {
	ctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	if err := s.dht.Provide(ctx, c, true); err != nil && s.host.RoutingTableSize() > 0 {
		s.log.Debug("provide chunk", "cid", c.String(), "err", err)
	}
}

// knownDevices looks up the device set of user's newest chain: a lookup
// that fails is ErrChainUnavailable, an unknown user ErrUnknownUser.
func (s *Service) knownDevices(ctx context.Context, user ident.UserID) (ident.DeviceSet, error) {
	known, err := s.users.Devices(ctx, user)
	if errors.Is(err, ErrUnknownUser) {
		return ident.DeviceSet{}, err
	}
	if err != nil {
		return ident.DeviceSet{}, fmt.Errorf("%w: %s: %w", ErrChainUnavailable, user, err)
	}
	return known, nil
}

// PutPointer checks a pointer record (decoded, signed by a device of the
// chain it carries, that device active in the newest chain this node
// finds, dated at most wire.PointerTimeSkew ahead of this node's clock,
// not older than the pointer stored here), stores it and puts it in the
// DHT. When the user's chain cannot be looked up it stores nothing and
// fails with ErrChainUnavailable.
func (s *Service) PutPointer(ctx context.Context, encoded []byte) (wire.PointerRecord, error) {
	r, err := wire.DecodePointerRecord(encoded)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	embedded, err := r.VerifyDevices()
	if err != nil {
		return wire.PointerRecord{}, err
	}
	known, err := s.knownDevices(ctx, r.Pointer.User)
	if errors.Is(err, ErrUnknownUser) {
		return wire.PointerRecord{}, fmt.Errorf("%w: %w", wire.ErrBadPointer, err)
	}
	if err != nil {
		return wire.PointerRecord{}, err
	}
	if err := checkCurrent(r.Pointer, embedded, known, s.now()); err != nil {
		return wire.PointerRecord{}, err
	}
	if err := s.cs.putPointer(r, encoded); err != nil {
		return wire.PointerRecord{}, err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PublishTimeout)
	defer cancel()
	if err := s.dht.PutValue(pctx, wire.PointerKey(r.Pointer.User), encoded); err != nil && s.host.RoutingTableSize() > 0 {
		s.log.Warn("DHT put of a backup pointer failed; the republish will retry", "user", r.Pointer.User.String(), "err", err)
	}
	return r, nil
}

// Pointer returns the newest pointer record of user that counts (see
// newestPointer), encoded.
func (s *Service) Pointer(ctx context.Context, user ident.UserID) ([]byte, error) {
	_, b, err := s.newestPointer(ctx, user)
	if errors.Is(err, ErrUnknownUser) {
		return nil, fmt.Errorf("%w: backup pointer of %s: %w", ErrNotFound, user, err)
	}
	return b, err
}

// newestPointer returns the newest pointer record of user this node
// finds, in its store or in the DHT, that counts: signed by a device
// active in the user's newest chain (looked up first, so that the DHT's
// validator on this node judges by it too) and dated at most
// wire.PointerTimeSkew ahead of this node's clock. It fails with
// ErrChainUnavailable when the chain cannot be looked up and ErrNotFound
// when no pointer counts.
func (s *Service) newestPointer(ctx context.Context, user ident.UserID) (wire.PointerRecord, []byte, error) {
	known, err := s.knownDevices(ctx, user)
	if err != nil {
		return wire.PointerRecord{}, nil, err
	}
	now := s.now()
	counts := func(b []byte) (wire.PointerRecord, error) {
		r, embedded, err := decodePointer(b, user)
		if err != nil {
			return wire.PointerRecord{}, err
		}
		return r, checkCurrent(r.Pointer, embedded, known, now)
	}
	var best wire.PointerRecord
	var bestBytes []byte
	var errs []error
	if _, lb, err := s.cs.pointer(user); err == nil {
		if r, err := counts(lb); err == nil {
			best, bestBytes = r, lb
		} else {
			errs = append(errs, fmt.Errorf("stored: %w", err))
		}
	} else if !errors.Is(err, ErrNotFound) {
		s.log.Error("stored backup pointer", "user", user.String(), "err", err)
		errs = append(errs, err)
	}
	if rb, err := s.fetchPointer(ctx, user); err == nil {
		if r, err := counts(rb); err != nil {
			errs = append(errs, fmt.Errorf("DHT: %w", err))
		} else if bestBytes == nil || r.Pointer.After(best.Pointer) {
			best, bestBytes = r, rb
		}
	} else {
		errs = append(errs, fmt.Errorf("DHT: %w", err))
	}
	if bestBytes == nil {
		return wire.PointerRecord{}, nil, fmt.Errorf("%w: backup pointer of %s: %w", ErrNotFound, user, errors.Join(errs...))
	}
	return best, bestBytes, nil
}

// keepPointer stores r (one that counts) unless the pointer stored here
// is as new: how a storage node keeps the pointer of the users whose
// chunks it holds.
func (s *Service) keepPointer(r wire.PointerRecord, encoded []byte) {
	if err := s.cs.putPointer(r, encoded); err != nil && !errors.Is(err, ErrStalePointer) {
		s.log.Warn("keep backup pointer", "user", r.Pointer.User.String(), "err", err)
	}
}

// fetchPointer reads user's pointer from the DHT.
func (s *Service) fetchPointer(ctx context.Context, user ident.UserID) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	return s.dht.GetValue(ctx, wire.PointerKey(user))
}

// learnPointers finds, for every user whose chunks this node holds, the
// newest pointer that counts and keeps it, so that the pointer outlives
// the node it was put through.
func (s *Service) learnPointers(ctx context.Context) {
	held, err := s.cs.list()
	if err != nil {
		s.log.Error("learn pointers", "err", err)
		return
	}
	seen := make(map[ident.UserID]bool)
	for _, h := range held {
		if seen[h.Meta.Owner] || ctx.Err() != nil {
			continue
		}
		seen[h.Meta.Owner] = true
		r, b, err := s.newestPointer(ctx, h.Meta.Owner)
		if err != nil {
			s.log.Debug("learn pointer", "user", h.Meta.Owner.String(), "err", err)
			continue
		}
		s.keepPointer(r, b)
	}
}

// Republish puts every stored pointer in the DHT again and announces every
// held chunk again, well inside the records' lifetime. A storage node
// first learns the newest pointer of every user whose chunks it holds.
func (s *Service) Republish(ctx context.Context) {
	if s.cfg.Enabled {
		s.learnPointers(ctx)
	}
	recs, err := s.cs.pointers()
	if err != nil {
		s.log.Error("republish pointers", "err", err)
	}
	for _, b := range recs {
		r, err := wire.DecodePointerRecord(b)
		if err != nil {
			s.log.Error("republish: stored pointer does not decode", "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, PublishTimeout)
		err = s.dht.PutValue(pctx, wire.PointerKey(r.Pointer.User), b)
		cancel()
		if err != nil {
			s.log.Warn("republish pointer", "user", r.Pointer.User.String(), "err", err)
		}
	}
	if !s.cfg.Enabled {
		return
	}
	held, err := s.cs.list()
	if err != nil {
		s.log.Error("republish chunks", "err", err)
		return
	}
	for _, h := range held {
		if ctx.Err() != nil {
			return
		}
		s.announce(ctx, h.CID)
	}
}
