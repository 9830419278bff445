package relay_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/relay"
	"github.com/volo-chat/volo/wire"
)

// A peer storing straight on a relay cannot plant envelopes dated far in
// the future (they would never expire); an envelope dated now is stored.
func TestRelayRefusesFarFutureEnvelopes(t *testing.T) {
	nw := relayNet(t, 2, 2, 1, nil)
	dev := deviceKeys(t).ID()
	relayPeer := nw.Nodes[1].PeerID()

	future := envelopes(dev, 2, "junk")
	future[0].Time = time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)
	future[1].Time = time.Now().Add(wire.MaxClockSkew + time.Minute)
	for i, err := range nw.Nodes[0].Relay().StoreOnRelay(t.Context(), relayPeer, future) {
		if !errors.Is(err, wire.ErrFromFuture) {
			t.Errorf("future envelope %d: %v, want %v", i, err, wire.ErrFromFuture)
		}
	}
	if n, _ := nw.Nodes[1].Relay().Local().Count(dev); n != 0 {
		t.Fatalf("the relay holds %d far-future envelopes", n)
	}
	// The sending node refuses it too, before any relay sees it.
	res, err := nw.Nodes[0].Relay().Send(t.Context(), future[:1])
	if err != nil || !errors.Is(res[0].Err, wire.ErrFromFuture) {
		t.Errorf("send of a far-future envelope: %+v %v", res, err)
	}

	// Within the skew, and dated now: stored.
	ok := envelopes(dev, 2, "ok")
	ok[1].Time = time.Now().Add(wire.MaxClockSkew - time.Minute)
	for i, err := range nw.Nodes[0].Relay().StoreOnRelay(t.Context(), relayPeer, ok) {
		if err != nil {
			t.Errorf("envelope %d: %v", i, err)
		}
	}
	if n, _ := nw.Nodes[1].Relay().Local().Count(dev); n != len(ok) {
		t.Fatalf("the relay holds %d envelopes, want %d", n, len(ok))
	}
}

// A relay stores (and takes handed-over) envelopes only for the mailboxes
// it is among the k closest relays of: a peer cannot park envelopes on any
// relay it likes.
func TestRelayStoresOnlyMailboxesItIsCloseTo(t *testing.T) {
	const k = 3
	nw := relayNet(t, 5, k, 2, nil)
	dev := deviceKeys(t).ID()
	relays := expectedRelays(nw, nil, dev, k)
	outsider := -1
	for i, nd := range nw.Nodes {
		if !slices.Contains(relays, nd.PeerID()) {
			outsider = i
			break
		}
	}
	from := nw.Nodes[nodeOf(nw, relays[0])].Relay()

	for _, err := range from.StoreOnRelay(t.Context(), nw.Nodes[outsider].PeerID(), envelopes(dev, 3, "elsewhere")) {
		if !errors.Is(err, relay.ErrNotResponsible) {
			t.Fatalf("store on a relay that is not close: %v, want %v", err, relay.ErrNotResponsible)
		}
	}
	if n, _ := nw.Nodes[outsider].Relay().Local().Count(dev); n != 0 {
		t.Fatalf("node %d is not a relay of the device but holds %d envelopes", outsider, n)
	}
	// A close relay stores them.
	for _, err := range from.StoreOnRelay(t.Context(), relays[1], envelopes(dev, 3, "here")) {
		if err != nil {
			t.Fatalf("store on a close relay: %v", err)
		}
	}
	waitCount(t, nw, nodeOf(nw, relays[1]), dev, 3)
}
