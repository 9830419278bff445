package keyregistry

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/internal/tstest"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// forkScenario is a user whose phone (genesis, naming a recovery key)
// added a laptop that was stolen. base is genesis and the add-device;
// legit continues it with the phone revoking the laptop; thief with the
// laptop revoking the phone; padded is thief with padLinks more devices;
// recovered is legit with the recovery key adding a new device.
type forkScenario struct {
	recovery                       e2ee.RecoveryKey
	phone, laptop                  e2ee.DeviceKeys
	base, legit, thief, padded     Chain
	recovered                      Chain
	legitDivergent, thiefDivergent ident.LinkID
}

const padLinks = 20

func extend(t testing.TB, c Chain, l ident.Link, err error) Chain {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.Set.Apply(l)
	if err != nil {
		t.Fatal(err)
	}
	return Chain{Set: set, Links: append(c.Links[:len(c.Links):len(c.Links)], l.Encode()), Attestation: c.Attestation}
}

func addDevice(t testing.TB, c Chain, signer, dev e2ee.DeviceKeys, now time.Time) Chain {
	t.Helper()
	req, err := e2ee.NewAddDeviceRequest(c.Set.Head(), dev)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e2ee.NewAddDevice(c.Set, signer, req, now)
	return extend(t, c, l, err)
}

func newForkScenario(t testing.TB) forkScenario {
	t.Helper()
	rk, err := e2ee.GenerateRecoveryKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := forkScenario{recovery: rk, phone: testKeys(t), laptop: testKeys(t)}
	now := time.Now()
	g, err := e2ee.NewGenesisWithRecovery(f.phone, rk.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	genesis := Chain{Set: set, Links: [][]byte{g.Encode()}, Attestation: testAttestation(t, testNodeKey(t), set.User(), KindOIDC)}
	f.base = addDevice(t, genesis, f.phone, f.laptop, now)
	l, err := e2ee.NewRevokeDevice(f.base.Set, f.phone, f.laptop.ID(), now.Add(time.Minute))
	f.legit = extend(t, f.base, l, err)
	l, err = e2ee.NewRevokeDevice(f.base.Set, f.laptop, f.phone.ID(), now.Add(time.Second))
	f.thief = extend(t, f.base, l, err)
	f.padded = f.thief
	for i := range padLinks {
		f.padded = addDevice(t, f.padded, f.laptop, testKeys(t), now.Add(time.Duration(2+i)*time.Second))
	}
	req, err := e2ee.NewAddDeviceRequest(f.legit.Set.Head(), testKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err = e2ee.NewRecoveryAddDevice(f.legit.Set, rk, req, now.Add(2*time.Minute))
	f.recovered = extend(t, f.legit, l, err)
	f.legitDivergent = f.legit.Set.Head().Link
	f.thiefDivergent = f.thief.Set.LinkIDs()[2]
	return f
}

// thiefWinsByLinkID reports whether the thief's divergent link has the
// smaller link ID: who wins a fork that no recovery link or anchor decides.
func (f forkScenario) thiefWinsByLinkID() bool {
	return bytes.Compare(f.thiefDivergent.Bytes(), f.legitDivergent.Bytes()) < 0
}

// TestSelectPaddedForkDoesNotWin is the attack on the DHT's Select: a
// thief's branch padded with padLinks devices used to win by length.
func TestSelectPaddedForkDoesNotWin(t *testing.T) {
	f := newForkScenario(t)
	key := RecordKey(f.base.Set.User())
	legitFirst := Validator{anchored: func(ident.UserID) ident.AnchoredAt {
		return func(l ident.LinkID) (uint64, bool) {
			switch {
			case l.Equal(f.legitDivergent):
				return 100, true
			case l.Equal(f.thiefDivergent):
				return 101, true
			}
			return 0, false
		}
	}}
	noAnchors := Validator{}
	for _, c := range []struct {
		name      string
		v         Validator
		legit     Chain
		legitWins bool
	}{
		{"recovery link", noAnchors, f.recovered, true},
		{"anchored first", legitFirst, f.legit, true},
		{"link ID", noAnchors, f.legit, !f.thiefWinsByLinkID()},
	} {
		for _, thief := range []Chain{f.thief, f.padded} {
			for _, legitAt := range []int{0, 1} {
				values := [][]byte{thief.Record().Encode()}
				values = append(values[:legitAt], append([][]byte{c.legit.Record().Encode()}, values[legitAt:]...)...)
				got, err := c.v.Select(key, values)
				if err != nil {
					t.Fatal(err)
				}
				if (got == legitAt) != c.legitWins {
					t.Errorf("%s: thief with %d links, legit at %d: Select = %d", c.name, thief.Version(), legitAt, got)
				}
			}
		}
	}
	// The positive control: an extension of the legit chain still wins
	// over it, and the longer of two prefixes.
	if got, _ := noAnchors.Select(key, [][]byte{f.legit.Record().Encode(), f.recovered.Record().Encode()}); got != 1 {
		t.Errorf("extension lost: %d", got)
	}
	if got, _ := noAnchors.Select(key, [][]byte{f.thief.Record().Encode(), f.base.Record().Encode()}); got != 0 {
		t.Errorf("rollback won: %d", got)
	}
}

// twoRegistries is two registries on loopback libp2p hosts, connected,
// each a member of the other's gossip topic.
func twoRegistries(t *testing.T) [2]*Service {
	t.Helper()
	var s [2]*Service
	for i := range s {
		s[i], _ = newTestService(t, DefaultConfig())
	}
	h0 := s[0].net.Host.(host.Host)
	h1 := s[1].net.Host.(host.Host)
	if err := h0.Connect(t.Context(), peer.AddrInfo{ID: h1.ID(), Addrs: h1.Addrs()}); err != nil {
		t.Fatal(err)
	}
	for i, r := range s {
		other := s[1-i].net.Host.ID()
		tstest.WaitFor(t, time.Minute, func() error {
			if !slices.Contains(r.topic.ListPeers(), other) {
				return fmt.Errorf("registry %d never saw %s join the topic", i, other)
			}
			return nil
		})
	}
	return s
}

// TestNodesResolveAForkAlike is the attack on the registries, which kept
// the first copy they saw: two nodes get the two branches of a fork in
// opposite orders (each holds one branch, then the other node announces
// its own) and end with the same chain, which the thief's padding does
// not win; both remember the fork with both heads.
func TestNodesResolveAForkAlike(t *testing.T) {
	f := newForkScenario(t)
	// Without an anchor or a recovery link the smaller divergent link ID
	// wins; make it the owner's, as it is for half of all forks.
	for f.thiefWinsByLinkID() {
		f = newForkScenario(t)
	}
	user := f.base.Set.User()
	s := twoRegistries(t)
	ctx := t.Context()
	if _, _, err := s[0].consider(ctx, f.legit); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s[1].consider(ctx, f.padded); err != nil {
		t.Fatal(err)
	}
	for i, c := range []Chain{f.legit, f.padded} {
		if err := s[i].topic.Publish(ctx, c.Record().Encode()); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range s {
		tstest.WaitFor(t, time.Minute, func() error {
			got, err := r.local(ctx, user)
			if err != nil {
				return err
			}
			if got.Set.Head() != f.legit.Set.Head() {
				return fmt.Errorf("node %d keeps version %d (%s), want the owner's version %d", i, got.Version(), got.Set.Head().Link, f.legit.Version())
			}
			fork, ok, err := r.Fork(ctx, user)
			if err != nil || !ok {
				return fmt.Errorf("node %d knows no fork: %v", i, err)
			}
			if fork.At != 3 || fork.Rule != ident.RuleLinkID || fork.Kept != f.legit.Set.Head() || fork.Other != f.padded.Set.Head() {
				return fmt.Errorf("node %d: fork %+v", i, fork)
			}
			return nil
		})
	}
}

// TestRecoveryLinkTakesOverAFork: the thief's branch won a fork by its
// link ID; the owner's recovery-key link, appended on a node to the other
// branch of the known fork, makes that branch win on every node.
func TestRecoveryLinkTakesOverAFork(t *testing.T) {
	f := newForkScenario(t)
	for !f.thiefWinsByLinkID() {
		f = newForkScenario(t)
	}
	user := f.base.Set.User()
	s := twoRegistries(t)
	ctx := t.Context()
	for _, r := range s {
		if _, _, err := r.consider(ctx, f.padded); err != nil {
			t.Fatal(err)
		}
	}
	// The owner's branch loses and is remembered on node 0 only.
	if res, _, err := s[0].consider(ctx, f.legit); err != nil || res.Candidate || res.Rule != ident.RuleLinkID {
		t.Fatalf("the owner's branch: %+v %v", res, err)
	}
	// A link after the losing branch that does not win is refused.
	plain, err := e2ee.NewAddDeviceRequest(f.legit.Set.Head(), testKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := e2ee.NewAddDevice(f.legit.Set, f.phone, plain, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s[0].AppendLink(ctx, user, l.Encode()); !errors.Is(err, ErrStaleChain) {
		t.Fatalf("a device link on the losing branch: %v", err)
	}
	// The recovery link wins.
	rec := f.recovered.Links[len(f.recovered.Links)-1]
	if _, err := s[0].AppendLink(ctx, user, rec); err != nil {
		t.Fatal(err)
	}
	for i, r := range s {
		tstest.WaitFor(t, time.Minute, func() error {
			got, err := r.local(ctx, user)
			if err != nil {
				return err
			}
			if got.Set.Head() != f.recovered.Set.Head() {
				return fmt.Errorf("node %d keeps version %d, want the recovered chain", i, got.Version())
			}
			return nil
		})
	}
	fork, ok, err := s[1].Fork(ctx, user)
	if err != nil || !ok || fork.Rule != ident.RuleRecovery || fork.Other != f.padded.Set.Head() {
		t.Fatalf("node 1: fork %+v %v %v", fork, ok, err)
	}
}
