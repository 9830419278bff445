package backupstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Repair checks, for every chunk this node holds, that its closest storage
// nodes hold it, and pushes it to those that do not: the holder closest
// to the chunk among those that answer does the pushing. A chunk this node
// is no longer among the closest for is pushed to them and, once all of
// them hold it, deleted here. It returns the number of copies pushed.
func (s *Service) Repair(ctx context.Context) (int, error) {
	held, err := s.cs.list()
	if err != nil {
		return 0, fmt.Errorf("backupstore: repair: %w", err)
	}
	self := s.host.ID()
	type plan struct {
		chunk heldChunk
		peers []peer.ID
	}
	var plans []plan
	ask := make(map[peer.ID][]cid.Cid)
	var errs []error
	for _, h := range held {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		peers, err := s.Holders(ctx, h.CID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plans = append(plans, plan{h, peers})
		for _, p := range peers {
			if p != self {
				ask[p] = append(ask[p], h.CID)
			}
		}
	}
	holds := make(map[peer.ID]map[cid.Cid]bool)
	for p, cids := range ask {
		res, err := s.hasOn(ctx, p, cids)
		m := make(map[cid.Cid]bool, len(cids))
		if err != nil {
			s.log.Debug("repair: has", "node", p.String(), "err", err)
		} else {
			for i, c := range cids {
				m[c] = res[i]
			}
		}
		holds[p] = m // a node that does not answer is not pushed to
		if err != nil {
			delete(holds, p)
		}
	}
	pushed := 0
	for _, pl := range plans {
		c := pl.chunk.CID
		inSet := slices.Contains(pl.peers, self)
		var missing []peer.ID
		first := peer.ID("")
		for _, p := range pl.peers {
			switch {
			case p == self:
				if first == "" {
					first = self
				}
			case holds[p] == nil:
				// no answer: neither a holder nor a target this round
			case holds[p][c]:
				if first == "" {
					first = p
				}
			default:
				missing = append(missing, p)
			}
		}
		if inSet && first != self {
			continue // a closer holder repairs
		}
		if len(missing) == 0 {
			if !inSet && first != "" && len(holds) > 0 && s.allHold(pl.peers, holds, c) {
				s.handOver(c)
			}
			continue
		}
		data, err := s.getLocal(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range missing {
			if _, err := s.storeRemote(ctx, p, msgReplicate, c, data, pl.chunk.Meta.Kind, pl.chunk.Meta.auth()); err != nil {
				errs = append(errs, fmt.Errorf("push %s to %s: %w", c, p, err))
				continue
			}
			holds[p][c] = true
			pushed++
			s.met.repairs.Inc()
		}
		if !inSet && s.allHold(pl.peers, holds, c) {
			s.handOver(c)
		}
	}
	if pushed > 0 {
		s.log.Info("repaired chunks", "copies_pushed", pushed)
	}
	return pushed, errors.Join(errs...)
}

// allHold reports whether every one of peers answered that it holds c.
func (s *Service) allHold(peers []peer.ID, holds map[peer.ID]map[cid.Cid]bool, c cid.Cid) bool {
	for _, p := range peers {
		if p == s.host.ID() || holds[p] == nil || !holds[p][c] {
			return false
		}
	}
	return true
}

// handOver deletes a chunk this node no longer should hold and its closest
// nodes all hold.
func (s *Service) handOver(c cid.Cid) {
	if ok, err := s.cs.remove(s.ctx, c, ident.UserID{}); err != nil {
		s.log.Warn("delete handed-over chunk", "cid", c.String(), "err", err)
	} else if ok {
		s.met.handedOver.Inc()
	}
}
