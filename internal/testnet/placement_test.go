package testnet_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/relay"
)

// TestFreshNodesPlaceAlike adds two nodes to a running network and, at
// once, asks both for the relays of 1,000 devices: each must name the same
// relays, the closest by XOR distance among all the nodes, whether or not
// it has finished identify with every one of them yet.
func TestFreshNodesPlaceAlike(t *testing.T) {
	nw := testnet.New(t, 6)
	a, b := nw.Add(), nw.Add()
	const devices, replicas = 1000, 3

	var all []peer.ID
	for _, n := range nw.Nodes {
		all = append(all, n.PeerID())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	keys := make([][]byte, devices)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "volo/mailbox/device-%d", i)
	}
	place := func(i int) [][]peer.ID {
		out := make([][]peer.ID, len(keys))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for j, key := range keys {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				got, err := nw.Nodes[i].Host().ClosestPeers(ctx, key, replicas, relay.ProtocolID)
				if err != nil {
					t.Errorf("node %d, key %d: %v", i, j, err)
				}
				out[j] = got
			})
		}
		wg.Wait()
		return out
	}
	// Each fresh node forgets what identify told it about half of the
	// others and drops its connections to them: the state libp2p leaves a
	// peer in a minute after the last connection to it closed, and the
	// state of a peer known only from the DHT.
	for i, n := range nw.Nodes[:a] {
		fresh := nw.Nodes[a+i%2].Host().Libp2p()
		fresh.Network().ClosePeer(n.PeerID())
		fresh.Peerstore().RemovePeer(n.PeerID())
	}
	var fromA, fromB [][]peer.ID
	var wg sync.WaitGroup
	wg.Go(func() { fromA = place(a) })
	wg.Go(func() { fromB = place(b) })
	wg.Wait()
	differ := 0
	for j, key := range keys {
		want := kb.SortClosestPeers(slices.Clone(all), kb.ConvertKey(string(key)))[:replicas]
		if !slices.Equal(fromA[j], fromB[j]) || !slices.Equal(fromA[j], want) {
			if differ < 5 {
				t.Errorf("key %d: node %d says %v, node %d says %v, want %v", j, a, fromA[j], b, fromB[j], want)
			}
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d keys placed differently\n%s", differ, devices, nw)
	}
}

// TestLoneNodePlacesOnItself: a single-node network (the embedded default)
// has an empty routing table, so the DHT lookup finds nobody; the node is
// then its own relay, or nothing could be sent at all.
func TestLoneNodePlacesOnItself(t *testing.T) {
	nw := testnet.New(t, 1)
	n := nw.Nodes[0]
	got, err := n.Host().ClosestPeers(t.Context(), []byte("some mailbox key"), 3, relay.ProtocolID)
	if err != nil {
		t.Fatalf("ClosestPeers on a lone node: %v", err)
	}
	if !slices.Equal(got, []peer.ID{n.PeerID()}) {
		t.Fatalf("ClosestPeers on a lone node = %v, want only itself %v", got, n.PeerID())
	}
}
