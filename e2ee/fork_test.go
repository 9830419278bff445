package e2ee

import (
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
)

// forkFixture is a user whose phone (genesis, with a recovery key) added a
// laptop that was then stolen. The owner revokes the laptop from the
// phone (legit); the thief, from the laptop, revokes the phone at the same
// sequence number (thief), then pads its branch with devices of its own.
type forkFixture struct {
	recovery        RecoveryKey
	phone, laptop   DeviceKeys
	base            chainFixture // genesis, phone adds laptop
	legit, thief    chainFixture
	padded          chainFixture // thief plus padLinks more links
	legitRecovered  chainFixture // legit plus a recovery-signed add-device
	thiefDivergent  ident.LinkID
	legitDivergent  ident.LinkID
	thiefByLinkID   bool // whether thief's divergent link ID is the smaller
	legitTime       time.Time
	recoveredDevice DeviceKeys
}

const padLinks = 20

func (f chainFixture) fork() chainFixture {
	return chainFixture{a: f.a, b: f.b, c: f.c, user: f.user, links: slices.Clone(f.links), sets: slices.Clone(f.sets)}
}

func newForkFixture(t testing.TB) forkFixture {
	t.Helper()
	f := forkFixture{
		recovery: fixedRecoveryKey(t, "alice recovery"),
		phone:    fixedDeviceKeys(t, "alice phone"),
		laptop:   fixedDeviceKeys(t, "alice laptop"),
	}
	g, err := NewGenesisWithRecovery(f.phone, f.recovery.Public(), testTime(0))
	if err != nil {
		t.Fatal(err)
	}
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	f.base = chainFixture{a: f.phone, b: f.laptop, user: g.UserID(), links: []ident.Link{g}, sets: []ident.DeviceSet{set}}
	f.base.add(t, f.phone, f.laptop, testTime(60))

	f.legit = f.base.fork()
	f.legit.revoke(t, f.phone, f.laptop.ID(), testTime(600))
	f.thief = f.base.fork()
	f.thief.revoke(t, f.laptop, f.phone.ID(), testTime(300))
	f.padded = f.thief.fork()
	for i := range padLinks {
		f.padded.add(t, f.laptop, fixedDeviceKeys(t, "thief pad "+strconv.Itoa(i)), testTime(int64(400+i)))
	}
	f.legitRecovered = f.legit.fork()
	f.recoveredDevice = fixedDeviceKeys(t, "alice new phone")
	req, err := NewAddDeviceRequest(f.legitRecovered.last().Head(), f.recoveredDevice)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewRecoveryAddDevice(f.legitRecovered.last(), f.recovery, req, testTime(900))
	if err != nil {
		t.Fatal(err)
	}
	f.legitRecovered.push(t, l)
	f.legitDivergent, f.thiefDivergent = f.legit.links[2].ID(), f.thief.links[2].ID()
	f.thiefByLinkID = strings.Compare(string(f.thiefDivergent.Bytes()), string(f.legitDivergent.Bytes())) < 0
	return f
}

func fixedRecoveryKey(t testing.TB, label string) RecoveryKey {
	t.Helper()
	k, err := GenerateRecoveryKey(detRand(label))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// blocks is an ident.AnchoredAt over a fixed map.
func blocks(m map[ident.LinkID]uint64) ident.AnchoredAt {
	return func(l ident.LinkID) (uint64, bool) {
		b, ok := m[l]
		return b, ok
	}
}

func TestResolveForkRelations(t *testing.T) {
	f := newForkFixture(t)
	g, _ := NewGenesis(fixedDeviceKeys(t, "bob"), testTime(0))
	bob, _ := ident.VerifyChain(g.UserID(), []ident.Link{g})
	for _, c := range []struct {
		name        string
		known, cand ident.DeviceSet
		rel         ident.ChainRelation
		keepCand    bool
	}{
		{"same", f.legit.last(), f.legit.last(), ident.ChainSame, false},
		{"extension", f.base.last(), f.legit.last(), ident.ChainExtends, true},
		{"rollback", f.legit.last(), f.base.last(), ident.ChainRollback, false},
		{"other user", f.legit.last(), bob, ident.ChainOtherUser, false},
	} {
		r := ident.ResolveFork(c.known, c.cand, nil)
		if r.Relation != c.rel || r.Candidate != c.keepCand || r.Rule != ident.RuleNone {
			t.Errorf("%s: got %+v", c.name, r)
		}
	}
}

// TestResolveForkPaddingDoesNotWin is the attack: a thief forks the chain
// at a revocation and pads its branch. Every step of the rule decides the
// same way for the padded branch as for the unpadded one, whichever chain
// the deciding node held first.
func TestResolveForkPaddingDoesNotWin(t *testing.T) {
	f := newForkFixture(t)
	if f.padded.last().Version() <= f.legit.last().Version()+padLinks-1 {
		t.Fatal("fixture: the padded branch is not longer")
	}
	anchoredLegitFirst := blocks(map[ident.LinkID]uint64{f.legitDivergent: 10, f.thiefDivergent: 11})
	onlyLegitAnchored := blocks(map[ident.LinkID]uint64{f.legitDivergent: 10})
	sameBlock := blocks(map[ident.LinkID]uint64{f.legitDivergent: 10, f.thiefDivergent: 10})
	for _, c := range []struct {
		name      string
		legit     ident.DeviceSet
		anchored  ident.AnchoredAt
		rule      ident.ForkRule
		legitWins bool
	}{
		{"recovery link", f.legitRecovered.last(), nil, ident.RuleRecovery, true},
		{"recovery link beats an earlier anchor", f.legitRecovered.last(),
			blocks(map[ident.LinkID]uint64{f.legitDivergent: 11, f.thiefDivergent: 10}), ident.RuleRecovery, true},
		{"anchored first", f.legit.last(), anchoredLegitFirst, ident.RuleAnchor, true},
		{"only one anchored", f.legit.last(), onlyLegitAnchored, ident.RuleAnchor, true},
		{"same block: link ID", f.legit.last(), sameBlock, ident.RuleLinkID, !f.thiefByLinkID},
		{"no anchors: link ID", f.legit.last(), nil, ident.RuleLinkID, !f.thiefByLinkID},
	} {
		for _, thief := range []ident.DeviceSet{f.thief.last(), f.padded.last()} {
			// The legit chain known, the thief's offered; then the other way round.
			r := ident.ResolveFork(c.legit, thief, c.anchored)
			if r.Relation != ident.ChainForked || r.At != 3 || r.Rule != c.rule || r.Candidate == c.legitWins {
				t.Errorf("%s, thief version %d offered: %+v", c.name, thief.Version(), r)
			}
			r = ident.ResolveFork(thief, c.legit, c.anchored)
			if r.Relation != ident.ChainForked || r.At != 3 || r.Rule != c.rule || r.Candidate != c.legitWins {
				t.Errorf("%s, thief version %d known: %+v", c.name, thief.Version(), r)
			}
		}
	}
}

func TestRecoveryKeyLinks(t *testing.T) {
	f := newForkFixture(t)
	set := f.legitRecovered.last()
	if pub, ok := set.Recovery(); !ok || !pub.Equal(f.recovery.Public()) {
		t.Fatal("recovery key not in the device set")
	}
	if !set.SignedByRecovery(set.Version()) || set.SignedByRecovery(set.Version()-1) || set.SignedByRecovery(0) {
		t.Fatal("SignedByRecovery wrong")
	}
	if _, ok := set.Lookup(f.recoveredDevice.ID()); !ok {
		t.Fatal("recovery add-device did not add the device")
	}
	// The whole chain verifies from its bytes.
	if _, _, err := ident.DecodeChain(f.base.user, encodeLinks(f.legitRecovered.links)); err != nil {
		t.Fatal(err)
	}

	// On the thief's branch, where the laptop revoked the phone, the
	// recovery key adds a new phone and revokes the stolen laptop.
	revoked := f.thief.fork()
	req, err := NewAddDeviceRequest(revoked.last().Head(), f.recoveredDevice)
	if err != nil {
		t.Fatal(err)
	}
	revoked.push(t, mustLink(t)(NewRecoveryAddDevice(revoked.last(), f.recovery, req, testTime(650))))
	revoked.push(t, mustLink(t)(NewRecoveryRevokeDevice(revoked.last(), f.recovery, f.laptop.ID(), testTime(700))))
	if revoked.last().Revoked(f.laptop.ID()) != true {
		t.Fatal("laptop not revoked")
	}
	// Not the last device.
	if _, err := NewRecoveryRevokeDevice(f.legit.last(), f.recovery, f.phone.ID(), testTime(700)); !errors.Is(err, ident.ErrInvalidLink) {
		t.Fatalf("revoking the last device: %v", err)
	}
	// Another key claiming to be the recovery key.
	other := fixedRecoveryKey(t, "mallory recovery")
	forged := ident.Link{Seq: 4, Kind: ident.LinkRevokeDevice, Prev: f.legit.last().Head().Link, Time: testTime(700),
		Revoked: f.phone.ID(), Signer: ident.RecoveryID(f.recovery.Public())}
	forged.Sig = other.k.Sign(ident.DomainLink, forged.SignedBytes())
	if _, err := f.legit.last().Apply(forged); !errors.Is(err, ident.ErrBadSignature) {
		t.Fatalf("forged recovery link: %v", err)
	}
	// A chain without a recovery key refuses a recovery-signed link.
	plain := newChainFixture(t)
	if _, err := NewRecoveryRevokeDevice(plain.last(), f.recovery, plain.b.ID(), testTime(700)); !errors.Is(err, ident.ErrForgedLink) {
		t.Fatalf("recovery link on a chain without one: %v", err)
	}
	// A recovery key only in genesis.
	bad := f.legit.links[2]
	bad.Recovery = other.Public()
	bad.Sig = f.phone.Signing.Sign(ident.DomainLink, bad.SignedBytes())
	if _, err := f.legit.sets[1].Apply(bad); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("recovery key in a revoke link: %v", err)
	}
	if _, err := ident.DecodeLink(bad.Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("decode a revoke link with a recovery key: %v", err)
	}
}

func mustLink(t testing.TB) func(ident.Link, error) ident.Link {
	return func(l ident.Link, err error) ident.Link {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
}

func TestRecoveryKeyText(t *testing.T) {
	k := fixedRecoveryKey(t, "alice recovery")
	text := k.Text()
	if len(text) != 52+12 || strings.Count(text, "-") != 12 {
		t.Fatalf("text form %d characters: %q", len(text), text)
	}
	for _, in := range []string{text, strings.ToUpper(text), strings.ReplaceAll(text, "-", " "), strings.ReplaceAll(text, "-", "")} {
		got, err := ParseRecoveryKey(in)
		if err != nil || !got.Public().Equal(k.Public()) {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
	for _, in := range []string{"", text[:len(text)-1], text + "a", strings.Replace(text, text[:1], "1", 1)} {
		if _, err := ParseRecoveryKey(in); !errors.Is(err, ident.ErrBadKey) {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
	if s := k.String() + k.GoString(); strings.Contains(s, text[:4]) {
		t.Fatal("String prints the key")
	}
}

type recoveryVector struct {
	Seed     string    `json:"recovery_seed_hex"`
	Text     string    `json:"recovery_text"`
	Public   string    `json:"recovery_public_hex"`
	SignerID string    `json:"recovery_signer_id"`
	User     string    `json:"user_id"`
	Links    []linkVec `json:"links"`
	Final    []string  `json:"final_device_ids"`
}

// makeRecoveryVector: genesis by "alice phone" naming the recovery key,
// the phone adds "alice laptop", the recovery key revokes the laptop.
func makeRecoveryVector(t *testing.T) recoveryVector {
	f := newForkFixture(t)
	c := f.base.fork()
	c.push(t, mustLink(t)(NewRecoveryRevokeDevice(c.last(), f.recovery, f.laptop.ID(), testTime(120))))
	v := recoveryVector{Seed: hex.EncodeToString(f.recovery.k.Seed()), Text: f.recovery.Text(),
		Public: hex.EncodeToString(f.recovery.Public().Bytes()), SignerID: ident.RecoveryID(f.recovery.Public()).String(),
		User: c.user.String()}
	for _, l := range c.links {
		v.Links = append(v.Links, linkVec{Kind: l.Kind.String(), ID: l.ID().String(), Encoded: hex.EncodeToString(l.Encode())})
	}
	for _, id := range c.last().DeviceIDs() {
		v.Final = append(v.Final, id.String())
	}
	return v
}

func TestRecoveryVectors(t *testing.T) {
	checkVectorFile(t, "recovery_vectors.json", makeRecoveryVector(t))
	var v recoveryVector
	readVectorFile(t, "recovery_vectors.json", &v)
	k, err := ParseRecoveryKey(v.Text)
	if err != nil || hex.EncodeToString(k.k.Seed()) != v.Seed || hex.EncodeToString(k.Public().Bytes()) != v.Public {
		t.Fatalf("recovery key text: %v", err)
	}
	user, err := ident.ParseUserID(v.User)
	if err != nil {
		t.Fatal(err)
	}
	var enc [][]byte
	for _, l := range v.Links {
		enc = append(enc, mustHex(t, l.Encoded))
	}
	set, links, err := ident.DecodeChain(user, enc)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range links {
		if hex.EncodeToString(l.Encode()) != v.Links[i].Encoded || l.ID().String() != v.Links[i].ID {
			t.Fatalf("link %d differs", i)
		}
	}
	if links[2].Signer.String() != v.SignerID || !set.SignedByRecovery(3) {
		t.Fatal("last link not signed by the recovery key")
	}
	var final []string
	for _, id := range set.DeviceIDs() {
		final = append(final, id.String())
	}
	if !slices.Equal(final, v.Final) {
		t.Fatalf("devices %v, want %v", final, v.Final)
	}
}
