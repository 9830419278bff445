package backupstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Get returns chunk c, checked against c: from this node's store, else
// from the storage nodes closest to c, else from the DHT's providers of c.
func (s *Service) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := wire.CheckChunkCID(c); err != nil {
		return nil, err
	}
	if data, err := s.getLocal(c); err == nil {
		s.met.served.WithLabelValues("local").Inc()
		return data, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	tried := map[peer.ID]bool{s.host.ID(): true}
	var errs []error
	peers, err := s.Holders(ctx, c)
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range peers {
		if tried[p] {
			continue
		}
		tried[p] = true
		data, err := s.getRemote(ctx, p, c)
		if err == nil {
			s.met.served.WithLabelValues("replica").Inc()
			return data, nil
		}
		errs = append(errs, err)
	}
	for _, p := range s.providers(ctx, c) {
		if tried[p] {
			continue
		}
		tried[p] = true
		data, err := s.getRemote(ctx, p, c)
		if err == nil {
			s.met.served.WithLabelValues("provider").Inc()
			return data, nil
		}
		errs = append(errs, err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: chunk %s on %d nodes: %w", ErrNotFound, c, len(tried)-1, errors.Join(errs...))
}

// getLocal reads c from this node's store. A copy that does not match its
// CID is dropped (and counted and logged): it is missing from now on, and
// the repair of another holder restores it.
func (s *Service) getLocal(c cid.Cid) ([]byte, error) {
	return s.getLocalInto(c, func(n int) []byte { return make([]byte, n) })
}

// getLocalInto is getLocal into a buffer from alloc.
func (s *Service) getLocalInto(c cid.Cid, alloc func(n int) []byte) ([]byte, error) {
	data, err := s.cs.getInto(c, alloc)
	if errors.Is(err, errCorrupt) {
		s.met.corrupt.Inc()
		s.log.Error("stored chunk does not match its CID; dropped", "cid", c.String(), "err", err)
		if _, rerr := s.cs.remove(s.ctx, c, ident.UserID{}); rerr != nil {
			s.log.Error("drop corrupt chunk", "cid", c.String(), "err", rerr)
		}
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return data, err
}

func (s *Service) getRemote(ctx context.Context, p peer.ID, c cid.Cid) ([]byte, error) {
	_, data, err := s.roundTrip(ctx, p, header{Type: msgGet, CID: c.Bytes()}, nil, msgChunk)
	if err != nil {
		return nil, err
	}
	if err := wire.CheckChunk(c, data); err != nil {
		s.log.Warn("storage node served a chunk that does not match its CID", "node", p.String(), "cid", c.String())
		return nil, fmt.Errorf("backupstore: chunk from %s: %w", p, err)
	}
	return data, nil
}
