package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// ProbeTimeout bounds how long ClosestPeers waits to learn whether one
// peer speaks the protocol (a dial and an identify exchange). A peer that
// does not answer within it is left out, as a peer that is down would be.
const ProbeTimeout = 5 * time.Second

// ClosestPeers returns the k peers closest to key by the DHT's XOR metric
// (over SHA-256 of the key and of the peer IDs) among the peers that speak
// proto, nearest first. The node itself is a candidate when it speaks proto.
// This is how a service finds the nodes responsible for a key.
//
// The candidates are the DHT's closest peers to key (a network lookup), the
// routing table and the peers connected now. They are taken in XOR order
// until k speak proto; what each speaks is what identify told this node,
// kept in the peerstore. A candidate that has not been identified yet (a
// peer that just joined, one known only from the DHT, or one whose record
// the peerstore dropped after it disconnected) is probed: dialled if there is no connection, and its
// identify waited for, each up to ProbeTimeout. So every node that asks
// gets the same answer once the DHT has converged, whether or not it had
// already finished identify with the peers concerned.
func (h *Host) ClosestPeers(ctx context.Context, key []byte, k int, proto protocol.ID) ([]peer.ID, error) {
	if k < 1 {
		return nil, fmt.Errorf("p2p: closest peers: k must be at least 1, got %d", k)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("p2p: closest peers: empty key")
	}
	// A network lookup gives the bucket-size closest peers; the routing
	// table adds candidates when few of those speak proto.
	found, err := h.dht.GetClosestPeers(ctx, string(key))
	if err != nil && len(found) == 0 {
		// A node alone (a single-node network, or one whose peers are all
		// gone) has nobody to ask: it is its own closest candidate. With
		// peers in its table the lookup failing is a real error.
		if h.dht.RoutingTable().Size() > 0 {
			return nil, fmt.Errorf("p2p: closest peers: %w", err)
		}
		h.log.Debug("closest peers: empty routing table, placing on this node alone", "err", err)
	}
	// Connected peers are candidates too: a peer whose query timed out on
	// a busy node leaves the routing table until a refresh finds it again,
	// yet it is still there and still among the closest.
	candidates := slices.Concat(found, h.dht.RoutingTable().ListPeers(), h.host.Network().Peers(), []peer.ID{h.ID()})
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)
	sorted := kb.SortClosestPeers(candidates, kb.ConvertKey(string(key)))

	out := make([]peer.ID, 0, k)
	for len(sorted) > 0 && len(out) < k {
		// Probe as many of the nearest remaining candidates as are still
		// wanted, together; the farther ones only if some of those do not
		// speak proto.
		batch := sorted[:min(k-len(out), len(sorted))]
		sorted = sorted[len(batch):]
		for i, ok := range h.speakAll(ctx, batch, proto) {
			if ok {
				out = append(out, batch[i])
			}
		}
	}
	return out, nil
}

// speakAll reports for each of peers whether it speaks proto, probing
// those not yet identified concurrently.
func (h *Host) speakAll(ctx context.Context, peers []peer.ID, proto protocol.ID) []bool {
	ok := make([]bool, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() { ok[i] = h.speaks(ctx, p, proto) })
	}
	wg.Wait()
	return ok
}

// speaks reports whether p speaks proto. The answer of an identify that has
// run is taken from the peerstore; a peer not identified yet is identified
// first (probe).
func (h *Host) speaks(ctx context.Context, p peer.ID, proto protocol.ID) bool {
	if p == h.ID() {
		return slices.Contains(h.host.Mux().Protocols(), proto)
	}
	if known, err := h.host.Peerstore().GetProtocols(p); err == nil && len(known) > 0 {
		return slices.Contains(known, proto)
	}
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	h.probe(pctx, p)
	ok, _ := h.host.Peerstore().SupportsProtocols(p, proto)
	return len(ok) > 0
}

// probe makes sure identify has run with p: it waits for the identify of
// each connection to p, or dials p (with the addresses the DHT gave) when
// there is none; the host's dial returns once identify has run. It gives up
// when ctx ends.
func (h *Host) probe(ctx context.Context, p peer.ID) {
	conns := h.host.Network().ConnsToPeer(p)
	if len(conns) == 0 {
		if err := h.host.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
			h.log.Debug("probe peer", "peer", p.String(), "err", err)
		}
		return
	}
	ids, ok := h.host.(interface{ IDService() identify.IDService })
	if !ok {
		return
	}
	for _, c := range conns {
		select {
		case <-ids.IDService().IdentifyWait(c):
		case <-ctx.Done():
			return
		}
	}
}
