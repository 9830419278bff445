package backupstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/wire"
)

// PlacementKey is the DHT key whose closest storage nodes hold chunk c:
// its multihash, the key the DHT keeps c's provider records under.
func PlacementKey(c cid.Cid) []byte { return c.Hash() }

// Holders returns the storage nodes that should hold c, closest first, as
// every node computes them: the Replicas nodes that speak ProtocolID
// closest to PlacementKey(c) by XOR distance.
func (s *Service) Holders(ctx context.Context, c cid.Cid) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	peers, err := s.host.ClosestPeers(ctx, PlacementKey(c), s.cfg.Replicas, ProtocolID)
	if err != nil && s.host.RoutingTableSize() == 0 && s.cfg.Enabled {
		// A node alone (a single-node network) is its own storage.
		return []peer.ID{s.host.ID()}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backupstore: holders of %s: %w", c, err)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoStorage, c)
	}
	return peers, nil
}

// providers returns up to maxProviders nodes that announced c in the DHT.
func (s *Service) providers(ctx context.Context, c cid.Cid) []peer.ID {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	var out []peer.ID
	for ai := range s.dht.FindProvidersAsync(ctx, c, maxProviders) {
		if ai.ID != s.host.ID() {
			if len(ai.Addrs) > 0 {
				s.host.Libp2p().Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
			}
			out = append(out, ai.ID)
		}
	}
	return out
}

// Replicas returns the storage nodes that answer that they hold c, asking
// the closest storage nodes and the DHT's providers of c.
func (s *Service) Replicas(ctx context.Context, c cid.Cid) ([]peer.ID, error) {
	if err := wire.CheckChunkCID(c); err != nil {
		return nil, err
	}
	peers, err := s.Holders(ctx, c)
	if err != nil && !errors.Is(err, ErrNoStorage) {
		return nil, err
	}
	for _, p := range s.providers(ctx, c) {
		if !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	held := make([]bool, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			h, err := s.hasOn(ctx, p, []cid.Cid{c})
			held[i] = err == nil && h[0]
		})
	}
	wg.Wait()
	var out []peer.ID
	for i, p := range peers {
		if held[i] {
			out = append(out, p)
		}
	}
	return out, nil
}

// hasOn asks node p (this node included) which of cids it holds.
func (s *Service) hasOn(ctx context.Context, p peer.ID, cids []cid.Cid) ([]bool, error) {
	out := make([]bool, len(cids))
	if p == s.host.ID() {
		if !s.cfg.Enabled {
			return out, nil
		}
		for i, c := range cids {
			ok, err := s.cs.has(c)
			if err != nil {
				return nil, err
			}
			out[i] = ok
		}
		return out, nil
	}
	for start := 0; start < len(cids); start += MaxHasBatch {
		part := cids[start:min(len(cids), start+MaxHasBatch)]
		raw := make([][]byte, len(part))
		for i, c := range part {
			raw[i] = c.Bytes()
		}
		r, _, err := s.roundTrip(ctx, p, header{Type: msgHas, CIDs: raw}, nil, msgHasResult)
		if err != nil {
			return nil, err
		}
		if len(r.Held) != len(part) {
			return nil, fmt.Errorf("%w: %d answers for %d CIDs from %s", ErrBadFrame, len(r.Held), len(part), p)
		}
		copy(out[start:], r.Held)
	}
	return out, nil
}
