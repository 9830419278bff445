package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/relay"
	"github.com/volo-chat/volo/wire"
)

// relayNet starts n nodes with k replicas and the given write quorum; the
// rebalance loop is left to the tests (they call Rebalance).
func relayNet(t testing.TB, n, k, quorum int, edit func(*relay.Config)) *testnet.Network {
	nw := testnet.New(t, n, testnet.Configure(func(i int, cfg *node.Config) {
		cfg.Relay.Replicas, cfg.Relay.WriteQuorum = k, quorum
		cfg.Relay.RebalanceInterval = config.Duration(24 * time.Hour)
		if edit != nil {
			edit(&cfg.Relay)
		}
	}))
	// The routing tables are full; wait until identify has told every node
	// which peers speak the relay protocol, so placements are complete.
	probe := deviceKeys(t).ID()
	for i, nd := range nw.Nodes {
		tstest.WaitFor(t, 30*time.Second, func() error {
			peers, err := nd.Relay().Relays(t.Context(), probe)
			if err == nil && len(peers) == min(k, n) {
				return nil
			}
			return fmt.Errorf("node %d sees relays %v (%v), want %d", i, peers, err, min(k, n))
		})
	}
	return nw
}

func deviceKeys(t testing.TB) e2ee.DeviceKeys {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func envelopes(to ident.DeviceID, n int, tag string) []wire.Envelope {
	out := make([]wire.Envelope, n)
	for i := range out {
		out[i] = wire.Envelope{To: to, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour,
			Ciphertext: fmt.Appendf(nil, "%s-%d", tag, i)}
	}
	return out
}

// contact registers a delivery key of keys' device on every node's
// mailboxes, as the device's subscribe tokens do, and returns it: the
// key its contacts attach to their envelopes.
func contact(t testing.TB, nw *testnet.Network, keys e2ee.DeviceKeys) []byte {
	t.Helper()
	key := make([]byte, wire.DeliveryVerifierSize)
	rand.Read(key)
	tok := wire.NewSubscribeToken(keys, "12D3KooWNode", time.Now(), wire.DeliveryVerifier(key))
	for _, nd := range nw.Nodes {
		if err := nd.Relay().Local().Register(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	return key
}

// withKey sets the delivery key of envs.
func withKey(envs []wire.Envelope, key []byte) []wire.Envelope {
	for i := range envs {
		envs[i].Delivery = key
	}
	return envs
}

func send(t testing.TB, nd *node.Node, envs []wire.Envelope, quorum int) {
	t.Helper()
	res, err := nd.Relay().Send(t.Context(), envs)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	for i, r := range res {
		if r.Err != nil || r.Stored < quorum {
			t.Fatalf("envelope %d: stored on %d relays, %v", i, r.Stored, r.Err)
		}
	}
}

// expectedRelays orders every node of nw by XOR distance to the device's
// mailbox key, as the DHT does, and returns the first k.
func expectedRelays(nw *testnet.Network, skip map[int]bool, dev ident.DeviceID, k int) []peer.ID {
	var all []peer.ID
	for i, nd := range nw.Nodes {
		if !skip[i] {
			all = append(all, nd.PeerID())
		}
	}
	sorted := kb.SortClosestPeers(all, kb.ConvertKey(string(relay.MailboxKey(dev))))
	return sorted[:min(k, len(sorted))]
}

func nodeOf(nw *testnet.Network, p peer.ID) int {
	for i, nd := range nw.Nodes {
		if nd.PeerID() == p {
			return i
		}
	}
	return -1
}

// waitCount waits until node i's own mailbox for dev holds want envelopes.
func waitCount(t testing.TB, nw *testnet.Network, i int, dev ident.DeviceID, want int) {
	t.Helper()
	tstest.WaitFor(t, 30*time.Second, func() error {
		n, err := nw.Nodes[i].Relay().Local().Count(dev)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			return fmt.Errorf("node %d holds %d envelopes for the device, want %d", i, n, want)
		}
		return nil
	})
}

// collector records what a subscription delivers.
type collector struct {
	mu   sync.Mutex
	got  []wire.Envelope
	more chan struct{}
}

// tokenFor returns keys' subscribe token for nd, made now.
func tokenFor(nd *node.Node, keys e2ee.DeviceKeys) func() wire.SubscribeToken {
	tok := wire.NewSubscribeToken(keys, nd.PeerID().String(), time.Now(), nil)
	return func() wire.SubscribeToken { return tok }
}

func subscribe(t testing.TB, nd *node.Node, keys e2ee.DeviceKeys) *collector {
	c := &collector{more: make(chan struct{}, 1)}
	token := tokenFor(nd, keys)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		nd.Relay().Subscribe(ctx, token, func(envs []wire.Envelope) {
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
	return c
}

// waitFor waits until the envelope last has been delivered and returns
// everything delivered so far.
func (c *collector) waitFor(t testing.TB, last wire.EnvelopeID) []wire.Envelope {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		c.mu.Lock()
		got := slices.Clone(c.got)
		c.mu.Unlock()
		if slices.ContainsFunc(got, func(e wire.Envelope) bool { return e.ID == last }) {
			return got
		}
		select {
		case <-c.more:
		case <-timeout:
			t.Fatalf("envelope %s not delivered; %d delivered", last, len(got))
		}
	}
}

// checkOnceInOrder checks that got is want followed by the marker, each once.
func checkOnceInOrder(t testing.TB, got, want []wire.Envelope, marker wire.Envelope) {
	t.Helper()
	want = append(slices.Clone(want), marker)
	if len(got) != len(want) {
		t.Fatalf("delivered %d envelopes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || string(got[i].Ciphertext) != string(want[i].Ciphertext) {
			t.Fatalf("delivery %d is %s, want %s", i, got[i].Ciphertext, want[i].Ciphertext)
		}
	}
}

func TestSendSubscribeAckOnClosestRelays(t *testing.T) {
	const k, quorum = 3, 2
	nw := relayNet(t, 5, k, quorum, nil)
	bob := deviceKeys(t)
	dev := bob.ID()

	// Every node finds the same relays: the k closest by XOR distance.
	want := expectedRelays(nw, nil, dev, k)
	for i, nd := range nw.Nodes {
		got, err := nd.Relay().Relays(t.Context(), dev)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("node %d: relays %v %v, want %v", i, got, err, want)
		}
	}
	isRelay := map[int]bool{}
	for _, p := range want {
		isRelay[nodeOf(nw, p)] = true
	}
	sender, reader := -1, -1
	for i := range nw.Nodes {
		if !isRelay[i] {
			if sender < 0 {
				sender = i
			} else {
				reader = i
			}
		}
	}

	envs := envelopes(dev, 20, "m")
	send(t, nw.Nodes[sender], envs, quorum)
	for i := range nw.Nodes {
		if isRelay[i] {
			waitCount(t, nw, i, dev, len(envs))
		} else if n, _ := nw.Nodes[i].Relay().Local().Count(dev); n != 0 {
			t.Errorf("node %d is not a relay of the device but holds %d envelopes", i, n)
		}
	}

	// A subscription on another node gets each envelope once, in order.
	c := subscribe(t, nw.Nodes[reader], bob)
	c.waitFor(t, envs[len(envs)-1].ID)
	marker := envelopes(dev, 1, "marker")
	send(t, nw.Nodes[sender], marker, quorum)
	checkOnceInOrder(t, c.waitFor(t, marker[0].ID), envs, marker[0])

	all := append(slices.Clone(envs), marker...)
	ids := make([]wire.EnvelopeRef, len(all))
	for i, e := range all {
		ids[i] = e.Ref()
	}
	for i := range nw.Nodes {
		if isRelay[i] {
			waitCount(t, nw, i, dev, len(all))
		}
	}

	// A forged ack (signed by another key, claiming Bob's device) is refused
	// by this node and by every relay, and deletes nothing.
	mallory := deviceKeys(t)
	forged := mallory.Signing.Sign(wire.DomainAck, wire.AckMessage(dev, ids))
	if err := nw.Nodes[reader].Relay().Ack(t.Context(), bob.Public(), ids, forged); !errors.Is(err, relay.ErrBadAck) {
		t.Fatalf("forged ack through the service: %v", err)
	}
	for _, p := range want {
		n, err := nw.Nodes[reader].Relay().AckOnRelay(t.Context(), p, bob.Public(), ids, forged)
		if !errors.Is(err, relay.ErrBadAck) || n != 0 {
			t.Fatalf("forged ack at relay %s: %d deleted, %v", p, n, err)
		}
	}
	// Mallory's validly signed ack of Bob's envelope IDs is for her own
	// mailbox: nothing of Bob's is deleted.
	own := mallory.Signing.Sign(wire.DomainAck, wire.AckMessage(mallory.ID(), ids))
	if err := nw.Nodes[reader].Relay().Ack(t.Context(), mallory.Public(), ids, own); err != nil {
		t.Fatalf("mallory's own ack: %v", err)
	}
	for i := range nw.Nodes {
		if isRelay[i] {
			if n, _ := nw.Nodes[i].Relay().Local().Count(dev); n != len(all) {
				t.Fatalf("node %d holds %d envelopes after forged acks, want %d", i, n, len(all))
			}
		}
	}

	// Bob's ack deletes them on every relay.
	sig := bob.Signing.Sign(wire.DomainAck, wire.AckMessage(dev, ids))
	if err := nw.Nodes[reader].Relay().Ack(t.Context(), bob.Public(), ids, sig); err != nil {
		t.Fatal(err)
	}
	for i := range nw.Nodes {
		if n, _ := nw.Nodes[i].Relay().Local().Count(dev); n != 0 {
			t.Errorf("node %d holds %d envelopes after the ack", i, n)
		}
	}
}

func TestCrashedRelayLosesNothing(t *testing.T) {
	const k, quorum = 3, 2
	nw := relayNet(t, 3, k, quorum, nil)
	keys := deviceKeys(t)
	dev := keys.ID()
	key := contact(t, nw, keys)
	var envs []wire.Envelope
	for range 10 {
		batch := withKey(envelopes(dev, 50, fmt.Sprintf("b%d", len(envs))), key)
		send(t, nw.Nodes[0], batch, quorum)
		envs = append(envs, batch...)
	}
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, len(envs))
	}
	// Node 2, one of the device's relays, crashes while they wait; the
	// device comes back through node 1.
	nw.HardStop(2)
	c := subscribe(t, nw.Nodes[1], keys)
	c.waitFor(t, envs[len(envs)-1].ID)
	marker := envelopes(dev, 1, "marker")
	send(t, nw.Nodes[0], marker, quorum)
	checkOnceInOrder(t, c.waitFor(t, marker[0].ID), envs, marker[0])
}

func TestRestartOfEveryNodeLosesNothing(t *testing.T) {
	const k, quorum = 3, 2
	nw := relayNet(t, 3, k, quorum, nil)
	keys := deviceKeys(t)
	dev := keys.ID()
	envs := withKey(envelopes(dev, 100, "r"), contact(t, nw, keys))
	send(t, nw.Nodes[0], envs, quorum)
	for i := range nw.Nodes {
		waitCount(t, nw, i, dev, len(envs))
	}
	for i := range nw.Nodes {
		nw.Restart(i)
	}
	nw.Settle()
	for i := range nw.Nodes {
		got, err := nw.Nodes[i].Relay().Local().List(dev, 0, 1000)
		if err != nil || len(got) != len(envs) {
			t.Fatalf("node %d after restart: %d envelopes, %v", i, len(got), err)
		}
		for j := range got {
			if got[j].Envelope.ID != envs[j].ID {
				t.Fatalf("node %d: envelope %d changed across the restart", i, j)
			}
		}
	}
	c := subscribe(t, nw.Nodes[2], keys)
	c.waitFor(t, envs[len(envs)-1].ID)
	marker := envelopes(dev, 1, "marker")
	send(t, nw.Nodes[1], marker, quorum)
	checkOnceInOrder(t, c.waitFor(t, marker[0].ID), envs, marker[0])
}

func TestMailboxCapTellsTheSender(t *testing.T) {
	nw := relayNet(t, 3, 3, 2, func(c *relay.Config) { c.MailboxCap = 5 })
	keys := deviceKeys(t)
	dev := keys.ID()
	envs := withKey(envelopes(dev, 7, "c"), contact(t, nw, keys))
	res, err := nw.Nodes[0].Relay().Send(t.Context(), envs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if full := errors.Is(r.Err, wire.ErrMailboxFull); full != (i >= 5) {
			t.Errorf("envelope %d: %+v", i, r)
		}
	}
	// A bad envelope is refused before anything is sent.
	bad := envelopes(dev, 1, "x")
	bad[0].Ciphertext = nil
	if res, _ := nw.Nodes[0].Relay().Send(t.Context(), bad); !errors.Is(res[0].Err, wire.ErrBadEnvelope) {
		t.Errorf("empty ciphertext: %+v", res[0])
	}
}

func TestNewCloserNodeReceivesMailboxes(t *testing.T) {
	const k, quorum = 3, 2
	nw := relayNet(t, 3, k, quorum, nil)
	const devices, each = 24, 5
	devs := make([]ident.DeviceID, devices)
	sent := make(map[ident.DeviceID][]wire.Envelope)
	for i := range devs {
		devs[i] = deviceKeys(t).ID()
		sent[devs[i]] = envelopes(devs[i], each, fmt.Sprint(i))
		send(t, nw.Nodes[i%3], sent[devs[i]], quorum)
	}
	for _, d := range devs {
		for i := range 3 {
			waitCount(t, nw, i, d, each)
		}
	}

	joined := nw.Add()
	for i := range 3 {
		if err := nw.Nodes[i].Relay().Rebalance(t.Context()); err != nil {
			t.Fatalf("node %d rebalance: %v", i, err)
		}
	}
	moved := 0
	for _, d := range devs {
		want := expectedRelays(nw, nil, d, k)
		newIsRelay := slices.Contains(want, nw.Nodes[joined].PeerID())
		for i, nd := range nw.Nodes {
			n, _ := nd.Relay().Local().Count(d)
			switch {
			case slices.Contains(want, nd.PeerID()) && n != each:
				t.Errorf("device %s: relay node %d holds %d envelopes, want %d", d, i, n, each)
			case !slices.Contains(want, nd.PeerID()) && n != 0:
				t.Errorf("device %s: node %d is no longer a relay but holds %d envelopes", d, i, n)
			}
		}
		if newIsRelay {
			moved++
			got, _ := nw.Nodes[joined].Relay().Local().List(d, 0, 100)
			for j := range got {
				if got[j].Envelope.ID != sent[d][j].ID {
					t.Errorf("device %s: handed-over envelope %d out of order", d, j)
				}
			}
		}
	}
	if moved == 0 {
		t.Fatal("the new node is a relay of none of the devices; the test proves nothing")
	}
	t.Logf("%d of %d mailboxes moved to the new node", moved, devices)
}

// largestEnvelopes returns n envelopes for dev of wire.MaxCiphertextSize
// random bytes each.
func largestEnvelopes(t testing.TB, to ident.DeviceID, n int) []wire.Envelope {
	t.Helper()
	out := make([]wire.Envelope, n)
	for i := range out {
		ct := make([]byte, wire.MaxCiphertextSize)
		rand.Read(ct)
		out[i] = wire.Envelope{To: to, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: ct}
	}
	return out
}

// A mailbox of envelopes of the largest size, far more than one relay
// frame holds, is handed over to the relay that should hold it and pushed
// from there to a subscriber on another node, all of it, in order.
func TestLargestEnvelopesHandedOverAndPushed(t *testing.T) {
	const count = 100
	nw := relayNet(t, 2, 1, 1, nil)
	// A device whose one relay is node 1; node 0 holds its mailbox as a
	// relay that no longer should.
	var keys e2ee.DeviceKeys
	var dev ident.DeviceID
	for dev.IsZero() || expectedRelays(nw, nil, dev, 1)[0] != nw.Nodes[1].PeerID() {
		keys = deviceKeys(t)
		dev = keys.ID()
	}
	envs := largestEnvelopes(t, dev, count)
	res, err := nw.Nodes[0].Relay().Local().Put(t.Context(), envs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("envelope %d: %v", i, r.Err)
		}
	}

	if err := nw.Nodes[0].Relay().Rebalance(t.Context()); err != nil {
		t.Fatalf("rebalance: %v", err)
	}
	if n, _ := nw.Nodes[0].Relay().Local().Count(dev); n != 0 {
		t.Errorf("node 0 still holds %d envelopes after the handover", n)
	}
	waitCount(t, nw, 1, dev, count)

	got := subscribe(t, nw.Nodes[0], keys).waitFor(t, envs[count-1].ID)
	if len(got) != count {
		t.Fatalf("%d envelopes pushed, want %d", len(got), count)
	}
	for i := range got {
		if got[i].ID != envs[i].ID || !bytes.Equal(got[i].Ciphertext, envs[i].Ciphertext) {
			t.Fatalf("push %d is not envelope %d as stored", i, i)
		}
	}
}
