package p2p

import (
	"context"
	"fmt"
	"slices"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// ClosestPeers returns the k peers closest to key by the DHT's XOR metric
// (over SHA-256 of the key and of the peer IDs) among the peers that speak
// proto, nearest first. The node itself is a candidate when it speaks proto.
// This is how a service finds the nodes responsible for a key: every node
// that asks gets the same answer once the DHT has converged.
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
		return nil, fmt.Errorf("p2p: closest peers: %w", err)
	}
	candidates := append(found, h.dht.RoutingTable().ListPeers()...)
	candidates = append(candidates, h.ID())
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)

	matching := candidates[:0]
	for _, p := range candidates {
		if h.speaks(ctx, p, proto) {
			matching = append(matching, p)
		}
	}
	sorted := kb.SortClosestPeers(matching, kb.ConvertKey(string(key)))
	if len(sorted) > k {
		sorted = sorted[:k]
	}
	return sorted, nil
}

// speaks reports whether p speaks proto, as learnt by identify. A peer
// that is connected but not yet identified is waited for.
func (h *Host) speaks(ctx context.Context, p peer.ID, proto protocol.ID) bool {
	if p == h.ID() {
		return slices.Contains(h.host.Mux().Protocols(), proto)
	}
	if ok, _ := h.host.Peerstore().SupportsProtocols(p, proto); len(ok) > 0 {
		return true
	}
	if ids, ok := h.host.(interface{ IDService() identify.IDService }); ok {
		for _, c := range h.host.Network().ConnsToPeer(p) {
			select {
			case <-ids.IDService().IdentifyWait(c):
			case <-ctx.Done():
				return false
			}
		}
	}
	ok, _ := h.host.Peerstore().SupportsProtocols(p, proto)
	return len(ok) > 0
}
