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

// PutPointer checks a pointer record (decoded, signed by a device of the
// chain it carries, that device not revoked in the newest chain this node
// finds, not older than the pointer stored here), stores it and puts it in
// the DHT.
func (s *Service) PutPointer(ctx context.Context, encoded []byte) (wire.PointerRecord, error) {
	r, err := wire.DecodePointerRecord(encoded)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	if err := r.Verify(); err != nil {
		return wire.PointerRecord{}, err
	}
	if cur, err := s.users.Devices(ctx, r.Pointer.User); err == nil {
		if _, ok := cur.Lookup(r.Pointer.Device); !ok && cur.Version() > 0 {
			return wire.PointerRecord{}, fmt.Errorf("%w: %s is not a current device of %s", wire.ErrBadPointer, r.Pointer.Device, r.Pointer.User)
		}
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

// Pointer returns the newest pointer record of user this node finds, in
// its store or in the DHT, encoded.
func (s *Service) Pointer(ctx context.Context, user ident.UserID) ([]byte, error) {
	local, lb, lerr := s.cs.pointer(user)
	if lerr != nil && !errors.Is(lerr, ErrNotFound) {
		s.log.Error("stored backup pointer", "user", user.String(), "err", lerr)
	}
	remote, rb, rerr := s.fetchPointer(ctx, user)
	switch {
	case lerr == nil && rerr == nil:
		if remote.Pointer.After(local.Pointer) {
			return rb, nil
		}
		return lb, nil
	case lerr == nil:
		return lb, nil
	case rerr == nil:
		return rb, nil
	}
	return nil, fmt.Errorf("%w: backup pointer of %s: %w", ErrNotFound, user, rerr)
}

// fetchPointer reads user's pointer from the DHT and verifies it.
func (s *Service) fetchPointer(ctx context.Context, user ident.UserID) (wire.PointerRecord, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	b, err := s.dht.GetValue(ctx, wire.PointerKey(user))
	if err != nil {
		return wire.PointerRecord{}, nil, err
	}
	r, err := decodePointer(b, user)
	if err != nil {
		return wire.PointerRecord{}, nil, err
	}
	return r, b, nil
}

// Republish puts every stored pointer in the DHT again and announces every
// held chunk again, well inside the records' lifetime.
func (s *Service) Republish(ctx context.Context) {
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
