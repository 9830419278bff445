package e2ee

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
)

// testTime returns 2026-01-01T00:00:00Z plus sec seconds.
func testTime(sec int64) time.Time { return time.Unix(1767225600+sec, 0).UTC() }

// chainFixture is a four-link chain: genesis by A, A adds B, B adds C,
// C revokes A.
type chainFixture struct {
	a, b, c DeviceKeys
	user    ident.UserID
	links   []ident.Link
	sets    []ident.DeviceSet // sets[i] = state after links[:i+1]
}

func newChainFixture(t testing.TB) chainFixture {
	t.Helper()
	f := chainFixture{
		a: fixedDeviceKeys(t, "alice phone"),
		b: fixedDeviceKeys(t, "alice laptop"),
		c: fixedDeviceKeys(t, "alice tablet"),
	}
	g, err := NewGenesis(f.a, testTime(0))
	if err != nil {
		t.Fatal(err)
	}
	f.user = g.UserID()
	set, err := ident.VerifyChain(f.user, []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	f.links = []ident.Link{g}
	f.sets = []ident.DeviceSet{set}
	f.add(t, f.a, f.b, testTime(60))
	f.add(t, f.b, f.c, testTime(120))
	f.revoke(t, f.c, f.a.ID(), testTime(180))
	return f
}

func (f chainFixture) last() ident.DeviceSet { return f.sets[len(f.sets)-1] }

func (f *chainFixture) push(t testing.TB, l ident.Link) {
	t.Helper()
	set, err := f.last().Apply(l)
	if err != nil {
		t.Fatal(err)
	}
	f.links = append(f.links, l)
	f.sets = append(f.sets, set)
}

func (f *chainFixture) add(t testing.TB, signer, newDev DeviceKeys, now time.Time) {
	t.Helper()
	req, err := NewAddDeviceRequest(f.last().Head(), newDev)
	if err != nil {
		t.Fatal(err)
	}
	// The request travels as bytes from the new device to the old one.
	req, err = ident.DecodeAddDeviceRequest(req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewAddDevice(f.last(), signer, req, now)
	if err != nil {
		t.Fatal(err)
	}
	f.push(t, l)
}

func (f *chainFixture) revoke(t testing.TB, signer DeviceKeys, target ident.DeviceID, now time.Time) {
	t.Helper()
	l, err := NewRevokeDevice(f.last(), signer, target, now)
	if err != nil {
		t.Fatal(err)
	}
	f.push(t, l)
}

func encodeLinks(links []ident.Link) [][]byte {
	out := make([][]byte, len(links))
	for i, l := range links {
		out[i] = l.Encode()
	}
	return out
}

func TestChainRoundTrip(t *testing.T) {
	f := newChainFixture(t)
	set, links, err := ident.DecodeChain(f.user, encodeLinks(f.links))
	if err != nil {
		t.Fatal(err)
	}
	for i := range links {
		if !bytes.Equal(links[i].Encode(), f.links[i].Encode()) {
			t.Fatalf("link %d re-encodes differently", i)
		}
	}
	if set.Version() != 4 || set.Len() != 2 || !set.User().Equal(f.user) {
		t.Fatalf("version %d len %d", set.Version(), set.Len())
	}
	if _, ok := set.Lookup(f.a.ID()); ok || !set.Revoked(f.a.ID()) {
		t.Fatal("A should be revoked")
	}
	for _, k := range []DeviceKeys{f.b, f.c} {
		d, ok := set.Lookup(k.ID())
		if !ok || !d.Equal(k.Public()) || set.Revoked(k.ID()) {
			t.Fatalf("%s missing", k)
		}
	}
	devs := set.Devices()
	ids := set.DeviceIDs()
	if len(devs) != 2 || !slices.IsSortedFunc(ids, ident.DeviceID.Compare) || !devs[0].ID().Equal(ids[0]) {
		t.Fatal("Devices not sorted by ID")
	}
	if ident.Relate(f.last(), set) != ident.ChainSame {
		t.Fatal("VerifyChain and Apply disagree")
	}
	// Apply leaves its receiver alone.
	if f.sets[0].Len() != 1 || f.sets[1].Len() != 2 || f.sets[2].Len() != 3 || f.sets[2].Revoked(f.a.ID()) {
		t.Fatal("Apply mutated an earlier set")
	}
	if f.links[3].Time.Before(f.links[2].Time) || !f.links[3].Time.Equal(testTime(180)) {
		t.Fatal("times")
	}
}

func TestLinkTimeNeverGoesBack(t *testing.T) {
	f := newChainFixture(t)
	d := fixedDeviceKeys(t, "alice watch")
	f.add(t, f.b, d, testTime(-3600)) // clock an hour behind
	if got := f.links[len(f.links)-1].Time; !got.Equal(f.links[len(f.links)-2].Time) {
		t.Fatalf("time %v not clamped", got)
	}
	if _, err := ident.VerifyChain(f.user, f.links); err != nil {
		t.Fatal(err)
	}
}

func chainErr(t *testing.T, err error, index int, want error) {
	t.Helper()
	var ce *ident.ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *ChainError", err)
	}
	if ce.Index != index || !errors.Is(err, want) {
		t.Fatalf("got %v (index %d), want index %d and %v", err, ce.Index, index, want)
	}
}

func TestVerifyChainFailures(t *testing.T) {
	f := newChainFixture(t)
	mallory := fixedDeviceKeys(t, "mallory")
	afterB := f.sets[1]

	t.Run("wrong user ID", func(t *testing.T) {
		g, _ := NewGenesis(mallory, testTime(0))
		_, err := ident.VerifyChain(g.UserID(), f.links)
		chainErr(t, err, 0, ident.ErrUserIDMismatch)
	})
	t.Run("empty", func(t *testing.T) {
		_, err := ident.VerifyChain(f.user, nil)
		chainErr(t, err, 0, ident.ErrEmptyChain)
	})
	t.Run("missing link", func(t *testing.T) {
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[2], f.links[3]})
		chainErr(t, err, 1, ident.ErrChainOrder)
	})
	t.Run("reordered links", func(t *testing.T) {
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[2], f.links[1], f.links[3]})
		chainErr(t, err, 1, ident.ErrChainOrder)
	})
	t.Run("genesis not first", func(t *testing.T) {
		_, err := ident.VerifyChain(f.user, f.links[1:])
		chainErr(t, err, 0, ident.ErrChainOrder)
	})
	t.Run("second genesis", func(t *testing.T) {
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[0]})
		chainErr(t, err, 1, ident.ErrChainOrder)
	})
	t.Run("wrong prev", func(t *testing.T) {
		l := f.links[2]
		l.Prev = f.links[0].ID()
		l.Sig = f.b.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[1], l})
		chainErr(t, err, 2, ident.ErrChainOrder)
	})
	t.Run("time going back", func(t *testing.T) {
		l := f.links[2]
		l.Time = testTime(30)
		l.Sig = f.b.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[1], l})
		chainErr(t, err, 2, ident.ErrChainOrder)
	})
	t.Run("forged link by a device not in the chain", func(t *testing.T) {
		req, _ := NewAddDeviceRequest(afterB.Head(), mallory)
		l := ident.Link{Seq: 3, Kind: ident.LinkAddDevice, Prev: afterB.Head().Link, Time: testTime(100),
			Device: mallory.Public(), Signer: mallory.ID(), DeviceSig: req.Sig}
		l.Sig = mallory.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[1], l})
		chainErr(t, err, 2, ident.ErrForgedLink)
		if _, err := NewAddDevice(afterB, mallory, req, testTime(100)); !errors.Is(err, ident.ErrForgedLink) {
			t.Fatalf("NewAddDevice by outsider: %v", err)
		}
	})
	t.Run("forged link claiming a chain device as signer", func(t *testing.T) {
		req, _ := NewAddDeviceRequest(afterB.Head(), mallory)
		l := ident.Link{Seq: 3, Kind: ident.LinkAddDevice, Prev: afterB.Head().Link, Time: testTime(100),
			Device: mallory.Public(), Signer: f.b.ID(), DeviceSig: req.Sig}
		l.Sig = mallory.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[1], l})
		chainErr(t, err, 2, ident.ErrBadSignature)
	})
	t.Run("add without the new device's consent", func(t *testing.T) {
		other, _ := NewAddDeviceRequest(afterB.Head(), fixedDeviceKeys(t, "other"))
		l := ident.Link{Seq: 3, Kind: ident.LinkAddDevice, Prev: afterB.Head().Link, Time: testTime(100),
			Device: mallory.Public(), Signer: f.b.ID(), DeviceSig: other.Sig}
		l.Sig = f.b.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, []ident.Link{f.links[0], f.links[1], l})
		chainErr(t, err, 2, ident.ErrBadSignature)
		forged := ident.AddDeviceRequest{Head: afterB.Head(), Device: mallory.Public(), Sig: other.Sig}
		if _, err := NewAddDevice(afterB, f.b, forged, testTime(100)); !errors.Is(err, ident.ErrBadSignature) {
			t.Fatalf("NewAddDevice with forged request: %v", err)
		}
		if _, err := ident.DecodeAddDeviceRequest(forged.Encode()); !errors.Is(err, ident.ErrBadSignature) {
			t.Fatalf("DecodeAddDeviceRequest of forged request: %v", err)
		}
	})
	t.Run("revoked device signing", func(t *testing.T) {
		set := f.last()
		l := ident.Link{Seq: 5, Kind: ident.LinkRevokeDevice, Prev: set.Head().Link, Time: testTime(300),
			Revoked: f.b.ID(), Signer: f.a.ID()}
		l.Sig = f.a.Signing.Sign(ident.DomainLink, l.SignedBytes())
		_, err := ident.VerifyChain(f.user, append(slices.Clone(f.links), l))
		chainErr(t, err, 4, ident.ErrRevokedDevice)
		if _, err := NewRevokeDevice(set, f.a, f.b.ID(), testTime(300)); !errors.Is(err, ident.ErrRevokedDevice) {
			t.Fatalf("NewRevokeDevice by revoked device: %v", err)
		}
	})
	t.Run("revoke twice", func(t *testing.T) {
		if _, err := NewRevokeDevice(f.last(), f.b, f.a.ID(), testTime(300)); !errors.Is(err, ident.ErrRevokedDevice) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("revoke self and last device", func(t *testing.T) {
		if _, err := NewRevokeDevice(f.sets[0], f.a, f.a.ID(), testTime(300)); !errors.Is(err, ident.ErrInvalidLink) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("revoke unknown device", func(t *testing.T) {
		if _, err := NewRevokeDevice(f.last(), f.b, mallory.ID(), testTime(300)); !errors.Is(err, ident.ErrInvalidLink) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("re-add revoked device", func(t *testing.T) {
		req, _ := NewAddDeviceRequest(f.last().Head(), f.a)
		if _, err := NewAddDevice(f.last(), f.b, req, testTime(300)); !errors.Is(err, ident.ErrRevokedDevice) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("add twice", func(t *testing.T) {
		req, _ := NewAddDeviceRequest(f.last().Head(), f.c)
		if _, err := NewAddDevice(f.last(), f.b, req, testTime(300)); !errors.Is(err, ident.ErrInvalidLink) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("stale request replayed at a later head", func(t *testing.T) {
		req, _ := NewAddDeviceRequest(f.sets[0].Head(), f.b)
		if _, err := NewAddDevice(f.last(), f.c, req, testTime(300)); !errors.Is(err, ident.ErrChainOrder) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("apply to empty set", func(t *testing.T) {
		if _, err := (ident.DeviceSet{}).Apply(f.links[1]); !errors.Is(err, ident.ErrEmptyChain) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("too many links", func(t *testing.T) {
		many := make([]ident.Link, ident.MaxChainLinks+1)
		_, err := ident.VerifyChain(f.user, many)
		chainErr(t, err, ident.MaxChainLinks, ident.ErrChainLimit)
	})
}

// TestChainTamperEveryByte flips each bit-pattern of every byte of every
// encoded link and checks that the chain is refused at that link.
func TestChainTamperEveryByte(t *testing.T) {
	f := newChainFixture(t)
	enc := encodeLinks(f.links)
	for i := range enc {
		for pos := range enc[i] {
			for _, flip := range []byte{0x01, 0x80} {
				mod := slices.Clone(enc)
				mod[i] = bytes.Clone(enc[i])
				mod[i][pos] ^= flip
				_, _, err := ident.DecodeChain(f.user, mod)
				var ce *ident.ChainError
				if !errors.As(err, &ce) || ce.Index != i {
					t.Fatalf("link %d byte %d ^%#x: got %v", i, pos, flip, err)
				}
			}
		}
	}
}

func TestDecodeLinkRejects(t *testing.T) {
	f := newChainFixture(t)
	for i, l := range f.links {
		enc := l.Encode()
		if len(enc) > ident.MaxLinkSize {
			t.Fatalf("link %d is %d bytes", i, len(enc))
		}
		for _, cut := range []int{0, 1, len(enc) / 2, len(enc) - 1} {
			if _, err := ident.DecodeLink(enc[:cut]); !errors.Is(err, ident.ErrMalformed) {
				t.Errorf("link %d cut at %d: %v", i, cut, err)
			}
		}
		if _, err := ident.DecodeLink(append(bytes.Clone(enc), 0)); !errors.Is(err, ident.ErrMalformed) {
			t.Errorf("link %d with a trailing byte: %v", i, err)
		}
	}
	// Fields not allowed for the kind.
	g := f.links[0]
	g.Revoked = f.b.ID()
	if _, err := ident.DecodeLink(g.Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("genesis with revoked: %v", err)
	}
	r := f.links[3]
	r.Device = f.b.Public()
	if _, err := ident.DecodeLink(r.Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("revoke with device: %v", err)
	}
	k := f.links[1]
	k.Kind = 9
	if _, err := ident.DecodeLink(k.Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("unknown kind: %v", err)
	}
	// Non-canonical: the same map with keys out of order.
	var m map[int]any
	if err := ident.DecMode.Unmarshal(f.links[3].Encode(), &m); err != nil {
		t.Fatal(err)
	}
	canon := marshalCBOR(m)
	if !bytes.Equal(canon, f.links[3].Encode()) {
		t.Fatal("test setup: map form differs")
	}
	// Swap the order of keys 1 and 2 by hand: a1 <k1> a2 ... -> header a7, then 02 03 01 04 ...
	swapped := append([]byte{canon[0], 0x02, 0x03, 0x01, 0x04}, canon[5:]...)
	if canon[1] != 0x01 || canon[2] != 0x04 || canon[3] != 0x02 || canon[4] != 0x03 {
		t.Fatalf("test setup: unexpected prefix %x", canon[:5])
	}
	if _, err := ident.DecodeLink(swapped); !errors.Is(err, ident.ErrNonCanonical) {
		t.Errorf("keys out of order: %v", err)
	}
}

func TestRelate(t *testing.T) {
	f := newChainFixture(t)
	other := newChainFixture(t)
	other.add(t, other.b, fixedDeviceKeys(t, "alice watch"), testTime(400))
	fork := chainFixture{a: f.a, b: f.b, c: f.c, user: f.user,
		links: slices.Clone(f.links[:2]), sets: slices.Clone(f.sets[:2])}
	fork.add(t, fork.a, fixedDeviceKeys(t, "alice tv"), testTime(100))
	g, _ := NewGenesis(fixedDeviceKeys(t, "bob"), testTime(0))
	bob, _ := ident.VerifyChain(g.UserID(), []ident.Link{g})

	cases := []struct {
		known, cand ident.DeviceSet
		want        ident.ChainRelation
	}{
		{f.last(), f.last(), ident.ChainSame},
		{f.last(), other.last(), ident.ChainExtends},
		{other.last(), f.last(), ident.ChainRollback},
		{f.sets[3], f.sets[1], ident.ChainRollback},
		{f.last(), fork.last(), ident.ChainForked},
		{fork.last(), f.last(), ident.ChainForked},
		{f.last(), bob, ident.ChainOtherUser},
	}
	for i, c := range cases {
		if got := ident.Relate(c.known, c.cand); got != c.want {
			t.Errorf("case %d: got %v, want %v", i, got, c.want)
		}
	}
}

func TestActiveDeviceLimit(t *testing.T) {
	f := newChainFixture(t)
	for i := f.last().Len(); i < ident.MaxActiveDevices; i++ {
		f.add(t, f.b, fixedDeviceKeys(t, "extra "+string(rune('A'+i))), testTime(int64(1000+i)))
	}
	req, _ := NewAddDeviceRequest(f.last().Head(), fixedDeviceKeys(t, "one too many"))
	if _, err := NewAddDevice(f.last(), f.b, req, testTime(5000)); !errors.Is(err, ident.ErrChainLimit) {
		t.Fatalf("got %v", err)
	}
}

type chainVector struct {
	User  string    `json:"user_id"`
	Links []linkVec `json:"links"`
	Final []string  `json:"final_device_ids"`
	Revkd []string  `json:"revoked_device_ids"`
	Req   string    `json:"add_device_request_cbor"`
}

type linkVec struct {
	Kind    string `json:"kind"`
	ID      string `json:"link_id"`
	Encoded string `json:"cbor"`
}

func makeChainVector(t *testing.T) chainVector {
	f := newChainFixture(t)
	v := chainVector{User: f.user.String()}
	for _, l := range f.links {
		v.Links = append(v.Links, linkVec{Kind: l.Kind.String(), ID: l.ID().String(), Encoded: hex.EncodeToString(l.Encode())})
	}
	for _, id := range f.last().DeviceIDs() {
		v.Final = append(v.Final, id.String())
	}
	v.Revkd = []string{f.a.ID().String()}
	req, _ := NewAddDeviceRequest(f.sets[0].Head(), f.b)
	v.Req = hex.EncodeToString(req.Encode())
	return v
}

func TestChainVectors(t *testing.T) {
	checkVectorFile(t, "chain_vectors.json", makeChainVector(t))

	var v chainVector
	readVectorFile(t, "chain_vectors.json", &v)
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
		if hex.EncodeToString(l.Encode()) != v.Links[i].Encoded || l.ID().String() != v.Links[i].ID || l.Kind.String() != v.Links[i].Kind {
			t.Fatalf("link %d differs", i)
		}
	}
	var final []string
	for _, id := range set.DeviceIDs() {
		final = append(final, id.String())
	}
	if !slices.Equal(final, v.Final) {
		t.Fatalf("devices %v, want %v", final, v.Final)
	}
	for _, s := range v.Revkd {
		id, _ := ident.ParseDeviceID(s)
		if !set.Revoked(id) {
			t.Fatalf("%s not revoked", s)
		}
	}
	req, err := ident.DecodeAddDeviceRequest(mustHex(t, v.Req))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(req.Encode()) != v.Req || req.Head.Version != 1 || !req.Head.User.Equal(user) {
		t.Fatal("request differs")
	}
}

// fiftyLinkChain builds a 50-link chain: genesis, then devices added one by
// one, every fourth link revoking the oldest remaining device.
func fiftyLinkChain(b testing.TB) chainFixture {
	f := chainFixture{a: fixedDeviceKeys(b, "bench 0")}
	g, err := NewGenesis(f.a, testTime(0))
	if err != nil {
		b.Fatal(err)
	}
	f.user = g.UserID()
	set, err := ident.VerifyChain(f.user, []ident.Link{g})
	if err != nil {
		b.Fatal(err)
	}
	f.links, f.sets = []ident.Link{g}, []ident.DeviceSet{set}
	keys := map[ident.DeviceID]DeviceKeys{f.a.ID(): f.a}
	order := []ident.DeviceID{f.a.ID()}
	for i := 1; len(f.links) < 50; i++ {
		newest := keys[order[len(order)-1]]
		if i%4 == 0 && len(order) > 1 {
			f.revoke(b, newest, order[0], testTime(int64(i)))
			order = order[1:]
			continue
		}
		k := fixedDeviceKeys(b, "bench "+strconv.Itoa(i))
		f.add(b, newest, k, testTime(int64(i)))
		keys[k.ID()] = k
		order = append(order, k.ID())
	}
	return f
}

// BenchmarkVerifyChain50 measures what a node or client does on a lookup:
// decode and verify a 50-link user chain from its bytes.
func BenchmarkVerifyChain50(b *testing.B) {
	f := fiftyLinkChain(b)
	enc := encodeLinks(f.links)
	for b.Loop() {
		if _, _, err := ident.DecodeChain(f.user, enc); err != nil {
			b.Fatal(err)
		}
	}
	perChain := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(perChain*1000, "ms/chain")
	b.ReportMetric(float64(len(enc))/perChain, "links/s")
}

// BenchmarkApplyLink measures accepting one more add-device link on a
// verified 49-link chain.
func BenchmarkApplyLink(b *testing.B) {
	f := fiftyLinkChain(b)
	prev := f.sets[len(f.sets)-2]
	l := f.links[len(f.links)-1]
	for b.Loop() {
		if _, err := prev.Apply(l); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "links/s")
}

func TestUserIDRoundTrip(t *testing.T) {
	g, err := NewGenesis(fixedDeviceKeys(t, "uid"), testTime(0))
	if err != nil {
		t.Fatal(err)
	}
	id := g.UserID()
	p, err := ident.ParseUserID(id.String())
	if err != nil || !p.Equal(id) {
		t.Fatalf("parse: %v", err)
	}
	q, err := ident.UserIDFromBytes(id.Bytes())
	if err != nil || !q.Equal(id) {
		t.Fatalf("from bytes: %v", err)
	}
	b, _ := id.MarshalCBOR()
	var r ident.UserID
	if err := r.UnmarshalCBOR(b); err != nil || !r.Equal(id) {
		t.Fatalf("cbor: %v", err)
	}
	if !bytes.Equal(g.ID().Bytes(), id.Bytes()) {
		t.Fatal("user ID is not the genesis link ID")
	}
}
