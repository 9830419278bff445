package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
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

// rawSubscribe opens a relay stream from node from to relay p as a bare
// libp2p peer would, writes req (a CBOR map of the relay protocol) and
// returns the first frame the relay answers, decoded.
func rawSubscribe(t *testing.T, from *node.Node, p peer.ID, req map[int]any) map[int]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := from.Host().Libp2p().NewStream(ctx, p, relay.ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	b, err := cbor.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(binary.AppendUvarint(nil, uint64(len(b)))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(b); err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(st)
	n, err := binary.ReadUvarint(br)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	reply := make([]byte, n)
	if _, err := io.ReadFull(br, reply); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	var m map[int]any
	if err := cbor.Unmarshal(reply, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A stranger peer (no device keys) cannot subscribe to a device's mailbox
// on its relay, neither by naming the device, nor with a token it forged,
// nor with the device's genuine token for another node; the device,
// through its own node, still gets its envelopes.
func TestStrangerSubscribeRefused(t *testing.T) {
	nw := relayNet(t, 3, 3, 2, nil)
	victim := deviceKeys(t)
	dev := victim.ID()
	envs := envelopes(dev, 4, "secret")
	send(t, nw.Nodes[1], envs, 2)
	waitCount(t, nw, 0, dev, len(envs))
	stranger, target := nw.Nodes[0], nw.Nodes[1].PeerID()

	mallory := deviceKeys(t)
	forged := wire.NewSubscribeToken(mallory, stranger.PeerID().String(), time.Now(), nil)
	forged.Device = dev // keys that are not the victim's
	forged.Sig = mallory.Signing.Sign(wire.DomainSubscribe, forged.SignedBytes())
	forgedRaw, err := cbor.Marshal(map[int]any{1: dev, 2: forged.Node, 3: uint64(forged.Time.UnixMilli()), 5: mallory.Public().Encode(), 6: forged.Sig})
	if err != nil {
		t.Fatal(err)
	}
	otherNode, err := wire.NewSubscribeToken(victim, nw.Nodes[2].PeerID().String(), time.Now(), nil).Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]map[int]any{
		"device only":       {1: 2, 2: dev.Bytes()},
		"forged token":      {1: 2, 11: forgedRaw},
		"another node's":    {1: 2, 11: otherNode},
		"no token, no name": {1: 2},
	} {
		r := rawSubscribe(t, stranger, target, req)
		if r[1] != uint64(8) || r[9] != "unauthorized" || r[3] != nil {
			t.Errorf("%s: relay answered %v, want an unauthorized error frame and no envelopes", name, r)
		}
	}

	// The device's own subscription through its node gets everything.
	c := subscribe(t, nw.Nodes[2], victim)
	got := c.waitFor(t, envs[len(envs)-1].ID)
	if len(got) != len(envs) {
		t.Fatalf("device got %d envelopes, want %d", len(got), len(envs))
	}
	// A token the device made for node 2 does not open a subscription on
	// node 0 either, even through the service.
	err = nw.Nodes[0].Relay().Subscribe(t.Context(), tokenFor(nw.Nodes[2], victim), func([]wire.Envelope) {
		t.Error("delivered with another node's token")
	})
	if !errors.Is(err, relay.ErrUnauthorized) {
		t.Fatalf("subscribe with another node's token: %v", err)
	}
}

// One relay out of three cannot suppress a message by pushing junk under
// its genuine ID first: relays keep both (they differ in ciphertext), the
// recipient gets both, and its ack of the junk, which it cannot open,
// deletes only the junk.
func TestJunkUnderAGenuineIDSuppressesNothing(t *testing.T) {
	const k, quorum = 3, 2
	nw := relayNet(t, 3, k, quorum, nil)
	bob := deviceKeys(t)
	dev := bob.ID()
	genuine := envelopes(dev, 1, "genuine")[0]
	junk := genuine
	junk.Ciphertext = []byte("junk under the genuine ID")

	// The malicious relay (node 2) has the junk stored everywhere before
	// the genuine envelope arrives.
	if res, err := nw.Nodes[2].Relay().Local().Put(t.Context(), []wire.Envelope{junk}); err != nil || res[0].Err != nil {
		t.Fatalf("junk on the malicious relay: %v %+v", err, res)
	}
	for _, nd := range nw.Nodes[:2] {
		for _, err := range nw.Nodes[2].Relay().StoreOnRelay(t.Context(), nd.PeerID(), []wire.Envelope{junk}) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	send(t, nw.Nodes[0], []wire.Envelope{genuine}, quorum)
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, 2)
	}

	// Bob's node delivers both, the junk once and the genuine once.
	c := subscribe(t, nw.Nodes[1], bob)
	var got []wire.Envelope
	for len(got) < 2 {
		got = c.waitFor(t, genuine.ID)
		if len(got) < 2 {
			<-c.more
		}
	}
	if len(got) != 2 {
		t.Fatalf("delivered %d envelopes, want the junk and the genuine once each", len(got))
	}
	var sawGenuine bool
	for _, e := range got {
		sawGenuine = sawGenuine || bytes.Equal(e.Ciphertext, genuine.Ciphertext)
	}
	if !sawGenuine {
		t.Fatal("the genuine envelope was not delivered")
	}

	// Bob acks the junk (it does not open): the genuine copies stay.
	refs := []wire.EnvelopeRef{junk.Ref()}
	if err := nw.Nodes[1].Relay().Ack(t.Context(), bob.Public(), refs, bob.Signing.Sign(wire.DomainAck, wire.AckMessage(dev, refs))); err != nil {
		t.Fatal(err)
	}
	for i, nd := range nw.Nodes {
		left, err := nd.Relay().Local().List(dev, 0, 10)
		if err != nil || len(left) != 1 || !bytes.Equal(left[0].Envelope.Ciphertext, genuine.Ciphertext) {
			t.Fatalf("node %d after the junk's ack holds %d envelopes (%v), want the genuine one", i, len(left), err)
		}
	}
	// Its ack of the genuine envelope deletes it.
	refs = []wire.EnvelopeRef{genuine.Ref()}
	if err := nw.Nodes[1].Relay().Ack(t.Context(), bob.Public(), refs, bob.Signing.Sign(wire.DomainAck, wire.AckMessage(dev, refs))); err != nil {
		t.Fatal(err)
	}
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, 0)
	}
}

// A stranger cannot fill a device's mailbox: envelopes without the
// device's delivery key count against a small quota for message requests,
// and one peer's stores are rate limited; a contact's envelope, carrying
// the key the device registered with its subscribe token, is still stored
// and delivered.
func TestStrangerFloodIsBounded(t *testing.T) {
	const requests = 20
	nw := relayNet(t, 3, 3, 2, func(c *relay.Config) {
		c.RequestsCap = requests
		c.StoreRate, c.StoreBurst = 1, relay.MaxBatch
	})
	victim := deviceKeys(t)
	dev := victim.ID()
	key := make([]byte, wire.DeliveryVerifierSize)
	rand.Read(key)

	// The device subscribes through node 2; its token registers the
	// delivery verifier with every relay of its mailbox.
	tok := wire.NewSubscribeToken(victim, nw.Nodes[2].PeerID().String(), time.Now(), wire.DeliveryVerifier(key))
	c := &collector{more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		nw.Nodes[2].Relay().Subscribe(ctx, func() wire.SubscribeToken { return tok }, func(envs []wire.Envelope) {
			c.mu.Lock()
			c.got = append(c.got, envs...)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	for i, nd := range nw.Nodes {
		tstest.WaitFor(t, 30*time.Second, func() error {
			if raw, err := nd.Relay().Local().Token(dev); err != nil || raw == nil {
				return fmt.Errorf("node %d has no token for the device yet (%v)", i, err)
			}
			return nil
		})
	}

	// The stranger (node 0, no key) floods every relay.
	stranger := nw.Nodes[0].Relay()
	flood := envelopes(dev, requests+30, "junk")
	for _, nd := range nw.Nodes[1:] {
		errs := stranger.StoreOnRelay(t.Context(), nd.PeerID(), flood)
		for i, err := range errs {
			if full := errors.Is(err, wire.ErrRequestsFull); (i >= requests) != full || (i < requests && err != nil) {
				t.Fatalf("flood envelope %d on %s: %v", i, nd.PeerID(), err)
			}
		}
		// Past its burst the stranger is rate limited.
		more := envelopes(dev, relay.MaxBatch, "more junk")
		for _, err := range stranger.StoreOnRelay(t.Context(), nd.PeerID(), more) {
			if !errors.Is(err, relay.ErrRateLimited) {
				t.Fatalf("store past the burst: %v, want %v", err, relay.ErrRateLimited)
			}
		}
	}
	if res, err := stranger.Local().Put(t.Context(), flood); err != nil || !errors.Is(res[len(res)-1].Err, wire.ErrRequestsFull) {
		t.Fatalf("flood on node 0: %v", err)
	}
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, requests)
	}

	// A contact's envelope, with the key, through node 1: stored and delivered.
	msg := withKey(envelopes(dev, 1, "from a contact"), key)
	send(t, nw.Nodes[1], msg, 2)
	got := c.waitFor(t, msg[0].ID)
	if len(got) != requests+1 {
		t.Fatalf("delivered %d envelopes, want the %d requests and the contact's", len(got), requests)
	}
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, requests+1)
	}
}
