package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/backup_vectors.json")

// seededKeys derives device keys from a fixed seed byte.
func seededKeys(t testing.TB, b byte) e2ee.DeviceKeys {
	t.Helper()
	sk, err := e2ee.SigningKeyFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := e2ee.MessagingKeyFromSeed(bytes.Repeat([]byte{b + 1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return e2ee.DeviceKeys{Signing: sk, Messaging: mk}
}

// backupUser is a user with a phone (genesis) and a laptop, the laptop
// revoked when revokeLaptop is set.
type backupUser struct {
	id            ident.UserID
	phone, laptop e2ee.DeviceKeys
	set           ident.DeviceSet
	chain         [][]byte
}

func newBackupUser(t testing.TB, seed byte, revokeLaptop bool) backupUser {
	t.Helper()
	u := backupUser{phone: seededKeys(t, seed), laptop: seededKeys(t, seed+0x10)}
	g, err := e2ee.NewGenesis(u.phone, t0)
	if err != nil {
		t.Fatal(err)
	}
	links := []ident.Link{g}
	set, err := ident.VerifyChain(g.UserID(), links)
	if err != nil {
		t.Fatal(err)
	}
	req, err := e2ee.NewAddDeviceRequest(set.Head(), u.laptop)
	if err != nil {
		t.Fatal(err)
	}
	add, err := e2ee.NewAddDevice(set, u.phone, req, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	links = append(links, add)
	if set, err = set.Apply(add); err != nil {
		t.Fatal(err)
	}
	if revokeLaptop {
		rev, err := e2ee.NewRevokeDevice(set, u.phone, u.laptop.ID(), t0.Add(2*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, rev)
		if set, err = set.Apply(rev); err != nil {
			t.Fatal(err)
		}
	}
	u.id, u.set = g.UserID(), set
	for _, l := range links {
		u.chain = append(u.chain, l.Encode())
	}
	return u
}

func testManifest(user ident.UserID, n int) Manifest {
	m := Manifest{User: user, Created: t0}
	for i := range n {
		b := bytes.Repeat([]byte{byte(i)}, 100+i)
		m.Chunks = append(m.Chunks, ManifestChunk{CID: ChunkCID(b), Size: uint32(len(b))})
		m.Size += uint64(len(b))
	}
	return m
}

func TestChunkCID(t *testing.T) {
	b := []byte("ciphertext")
	c := ChunkCID(b)
	if c.Version() != 1 || c.Type() != cid.Raw || c.Prefix().MhType != 0x12 {
		t.Fatalf("CID %s: prefix %+v", c, c.Prefix())
	}
	if err := CheckChunk(c, b); err != nil {
		t.Fatal(err)
	}
	if err := CheckChunk(c, []byte("ciphertexT")); !errors.Is(err, ErrBadChunk) {
		t.Errorf("tampered chunk: %v", err)
	}
	if err := CheckChunk(ChunkCID(nil), nil); !errors.Is(err, ErrBadChunk) {
		t.Errorf("empty chunk: %v", err)
	}
	big := make([]byte, MaxChunkSize+1)
	if err := CheckChunk(ChunkCID(big), big); !errors.Is(err, ErrBadChunk) {
		t.Errorf("oversized chunk: %v", err)
	}
	if err := CheckChunk(cid.NewCidV1(cid.DagCBOR, c.Hash()), b); !errors.Is(err, ErrBadChunk) {
		t.Errorf("dag-cbor CID: %v", err)
	}
	if err := CheckChunk(cid.NewCidV0(c.Hash()), b); !errors.Is(err, ErrBadChunk) {
		t.Errorf("CIDv0: %v", err)
	}
	got, err := ParseChunkCID(c.String())
	if err != nil || !got.Equals(c) {
		t.Fatalf("parse %s: %v %v", c, got, err)
	}
	for _, s := range []string{"", strings.ToUpper(c.String()), "B" + c.String()[1:], c.String()[:58], cid.NewCidV1(cid.DagCBOR, c.Hash()).String(), cid.NewCidV0(c.Hash()).String()} {
		if _, err := ParseChunkCID(s); !errors.Is(err, ErrBadChunk) {
			t.Errorf("parse %q: %v", s, err)
		}
	}
	if got, err := ChunkCIDFromBytes(c.Bytes()); err != nil || !got.Equals(c) {
		t.Errorf("from bytes: %v %v", got, err)
	}
	if _, err := ChunkCIDFromBytes(c.Bytes()[1:]); !errors.Is(err, ErrBadChunk) {
		t.Errorf("short bytes: %v", err)
	}
}

func TestManifestRoundTripAndLimits(t *testing.T) {
	u := newBackupUser(t, 0x30, false)
	m := testManifest(u.id, 3)
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.User.Equal(m.User) || !got.Created.Equal(m.Created) || got.Size != m.Size || len(got.Chunks) != 3 {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range got.Chunks {
		if !got.Chunks[i].CID.Equals(m.Chunks[i].CID) || got.Chunks[i].Size != m.Chunks[i].Size {
			t.Errorf("chunk %d: %+v, want %+v", i, got.Chunks[i], m.Chunks[i])
		}
	}

	mutate := func(f func(*Manifest)) Manifest {
		c := m
		c.Chunks = append([]ManifestChunk(nil), m.Chunks...)
		f(&c)
		return c
	}
	bad := map[string]Manifest{
		"no user":       mutate(func(m *Manifest) { m.User = ident.UserID{} }),
		"no time":       mutate(func(m *Manifest) { m.Created = time.Time{} }),
		"no chunks":     mutate(func(m *Manifest) { m.Chunks, m.Size = nil, 0 }),
		"size mismatch": mutate(func(m *Manifest) { m.Size++ }),
		"zero chunk":    mutate(func(m *Manifest) { m.Size -= uint64(m.Chunks[0].Size); m.Chunks[0].Size = 0 }),
		"huge chunk": mutate(func(m *Manifest) {
			m.Size += MaxChunkSize + 1 - uint64(m.Chunks[0].Size)
			m.Chunks[0].Size = MaxChunkSize + 1
		}),
		"undefined CID": mutate(func(m *Manifest) { m.Chunks[1].CID = cid.Undef }),
		"dag-cbor CID":  mutate(func(m *Manifest) { m.Chunks[1].CID = cid.NewCidV1(cid.DagCBOR, m.Chunks[1].CID.Hash()) }),
	}
	for name, bm := range bad {
		if _, err := bm.Encode(); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: Encode = %v", name, err)
		}
	}

	// Too many chunks: build the encoding by hand, past Encode's check.
	w := wireManifest{Version: 1, User: u.id, Created: uint64(t0.UnixMilli())}
	for range MaxManifestChunks + 1 {
		w.Chunks = append(w.Chunks, wireManifestChunk{CID: m.Chunks[0].CID.Bytes(), Size: m.Chunks[0].Size})
		w.Size += uint64(m.Chunks[0].Size)
	}
	over, _ := encMode.Marshal(w)
	if _, err := DecodeManifest(over); !errors.Is(err, ErrBadManifest) {
		t.Errorf("%d chunks accepted: %v", MaxManifestChunks+1, err)
	}
	// Positive control: the largest manifest decodes and fits in a chunk.
	w.Chunks, w.Size = w.Chunks[:MaxManifestChunks], w.Size-uint64(m.Chunks[0].Size)
	full, _ := encMode.Marshal(w)
	if len(full) > MaxChunkSize {
		t.Errorf("a full manifest is %d bytes, over MaxChunkSize", len(full))
	}
	if _, err := DecodeManifest(full); err != nil {
		t.Errorf("%d chunks refused: %v", MaxManifestChunks, err)
	}
	// Another version.
	w = wireManifest{Version: 2, User: u.id, Created: uint64(t0.UnixMilli()), Size: m.Size}
	for _, c := range m.Chunks {
		w.Chunks = append(w.Chunks, wireManifestChunk{CID: c.CID.Bytes(), Size: c.Size})
	}
	v2, _ := encMode.Marshal(w)
	if _, err := DecodeManifest(v2); !errors.Is(err, ErrBadManifest) {
		t.Errorf("version 2 accepted: %v", err)
	}
	if _, err := DecodeManifest(append(bytes.Clone(b), 0)); !errors.Is(err, ErrBadManifest) {
		t.Errorf("trailing byte accepted: %v", err)
	}
	for i := range b {
		tampered := bytes.Clone(b)
		tampered[i] ^= 0x01
		if d, err := DecodeManifest(tampered); err == nil {
			again, _ := d.Encode()
			if bytes.Equal(again, b) {
				t.Errorf("byte %d flipped and decoded to the same manifest", i)
			}
		}
	}
}

func TestPointerRecord(t *testing.T) {
	u := newBackupUser(t, 0x40, false)
	p := BackupPointer{User: u.id, Device: u.laptop.ID(), Manifest: ChunkCID([]byte("manifest")), Size: 1 << 20, Time: t0.Add(time.Hour + 123*time.Microsecond)}
	r, err := SignBackupPointer(p, u.laptop.Signing, u.chain)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePointerRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatalf("decoded record: %v", err)
	}
	if !got.Pointer.Time.Equal(t0.Add(time.Hour)) || !got.Pointer.Manifest.Equals(p.Manifest) || got.Pointer.Size != p.Size {
		t.Errorf("round trip: %+v", got.Pointer)
	}

	other := newBackupUser(t, 0xa0, false)
	revoked := newBackupUser(t, 0x40, true) // same phone, laptop revoked
	stranger := seededKeys(t, 0x60)
	sign := func(p BackupPointer, k e2ee.SigningKey, chain [][]byte) PointerRecord {
		r, err := SignBackupPointer(p, k, chain)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	withDevice := func(d ident.DeviceID) BackupPointer { q := p; q.Device = d; return q }
	unsigned := r
	unsigned.Signature = make([]byte, ident.SignatureSize)
	tamperedSize := r
	tamperedSize.Pointer.Size++
	bad := map[string]PointerRecord{
		"unsigned":               unsigned,
		"size changed":           tamperedSize,
		"signed by another key":  sign(p, stranger.Signing, u.chain),
		"device not in chain":    sign(withDevice(stranger.ID()), stranger.Signing, u.chain),
		"revoked device":         sign(p, u.laptop.Signing, revoked.chain),
		"another user's chain":   sign(p, u.laptop.Signing, other.chain),
		"other user's device":    sign(withDevice(other.phone.ID()), other.phone.Signing, u.chain),
		"truncated chain":        sign(p, u.laptop.Signing, u.chain[:1]),
		"link from another user": sign(p, u.laptop.Signing, [][]byte{u.chain[0], other.chain[1]}),
	}
	for name, br := range bad {
		if err := br.Verify(); !errors.Is(err, ErrBadPointer) {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
	// The phone may sign too, and the revoking chain still lets the phone sign.
	if err := sign(withDevice(u.phone.ID()), u.phone.Signing, revoked.chain).Verify(); err != nil {
		t.Errorf("phone on the revoking chain: %v", err)
	}

	if _, err := SignBackupPointer(BackupPointer{User: u.id, Device: u.phone.ID(), Size: 1, Time: t0}, u.phone.Signing, u.chain); !errors.Is(err, ErrBadPointer) {
		t.Errorf("no manifest: %v", err)
	}
	if _, err := SignBackupPointer(p, u.laptop.Signing, nil); !errors.Is(err, ErrBadPointer) {
		t.Errorf("no chain: %v", err)
	}
	if _, err := DecodePointerRecord(append(bytes.Clone(b), 0)); !errors.Is(err, ErrBadPointer) {
		t.Errorf("trailing byte: %v", err)
	}
	if _, err := DecodePointerRecord(make([]byte, MaxPointerRecordSize+1)); !errors.Is(err, ErrBadPointer) {
		t.Errorf("oversized: %v", err)
	}
	for i := range b {
		tampered := bytes.Clone(b)
		tampered[i] ^= 0x01
		if d, err := DecodePointerRecord(tampered); err == nil && d.Verify() == nil {
			again, _ := d.Encode()
			if !bytes.Equal(again, b) {
				t.Errorf("byte %d flipped: a different record verifies", i)
			}
		}
	}
}

func TestPointerOrder(t *testing.T) {
	a := BackupPointer{Manifest: ChunkCID([]byte("a")), Time: t0}
	b := BackupPointer{Manifest: ChunkCID([]byte("b")), Time: t0}
	later := BackupPointer{Manifest: ChunkCID([]byte("c")), Time: t0.Add(time.Millisecond)}
	if !later.After(a) || a.After(later) {
		t.Error("a later pointer does not win")
	}
	if a.After(b) == b.After(a) {
		t.Error("a tie is not broken one way")
	}
	small, large := a, b
	if bytes.Compare(a.Manifest.Bytes(), b.Manifest.Bytes()) > 0 {
		small, large = b, a
	}
	if !small.After(large) {
		t.Error("a tie is not won by the smaller manifest CID")
	}
	if a.After(a) {
		t.Error("a pointer replaces itself")
	}
}

func TestUploadAuth(t *testing.T) {
	u := newBackupUser(t, 0x70, false)
	revoked := newBackupUser(t, 0x70, true)
	other := newBackupUser(t, 0xc0, false)
	const node = "12D3KooWNodeA"
	what := ChunkCID([]byte("chunk")).String()
	now := t0.Add(time.Hour)
	a := SignUpload(u.laptop, u.id, node, what, now)
	if err := a.Verify(node, what, u.set, now); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	if err := a.Verify(node, what, u.set, now.Add(BackupTimeSkew)); err != nil {
		t.Errorf("at the edge of the skew: %v", err)
	}
	wrongSig := a
	wrongSig.Signature = bytes.Clone(a.Signature)
	wrongSig.Signature[0] ^= 1
	otherDevice := a
	otherDevice.Device = u.phone.ID()
	cases := map[string]error{
		"wrong node":      a.Verify("12D3KooWNodeB", what, u.set, now),
		"wrong chunk":     a.Verify(node, ChunkCID([]byte("other")).String(), u.set, now),
		"stale":           a.Verify(node, what, u.set, now.Add(BackupTimeSkew+time.Second)),
		"future":          a.Verify(node, what, u.set, now.Add(-BackupTimeSkew-time.Second)),
		"revoked device":  a.Verify(node, what, revoked.set, now),
		"other user":      a.Verify(node, what, other.set, now),
		"bad signature":   wrongSig.Verify(node, what, u.set, now),
		"device mismatch": otherDevice.Verify(node, what, u.set, now),
		"foreign device":  SignUpload(other.phone, u.id, node, what, now).Verify(node, what, u.set, now),
		"zero":            UploadAuth{}.Verify(node, what, u.set, now),
	}
	for name, err := range cases {
		if !errors.Is(err, ErrUploadAuth) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := CheckWhat(1<<30, 1024); got != "check:1073741824:1024" {
		t.Errorf("CheckWhat = %q", got)
	}
}

// backupVectors are the committed examples of docs/protocol.md.
type backupVectors struct {
	Comment       string `json:"comment"`
	UserID        string `json:"user_id"`
	Device        string `json:"device"`
	Manifest      string `json:"manifest"` // hex
	ManifestCID   string `json:"manifest_cid"`
	PointerRecord string `json:"pointer_record"` // hex
	PointerKey    string `json:"pointer_key"`
	UploadPeerID  string `json:"upload_peer_id"`
	UploadWhat    string `json:"upload_what"`
	UploadTime    int64  `json:"upload_time"`
	UploadMessage string `json:"upload_message"` // hex
	UploadSig     string `json:"upload_signature"`
}

func makeBackupVectors(t *testing.T) backupVectors {
	u := newBackupUser(t, 0x10, false)
	m := testManifest(u.id, 2)
	mb, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	r, err := SignBackupPointer(BackupPointer{User: u.id, Device: u.laptop.ID(), Manifest: ChunkCID(mb), Size: m.Size, Time: t0.Add(time.Hour)}, u.laptop.Signing, u.chain)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const peer = "12D3KooWExampleNode"
	what := ChunkCID(mb).String()
	a := SignUpload(u.laptop, u.id, peer, what, t0.Add(time.Hour))
	return backupVectors{
		Comment:       "phone (seed 0x10) registers at 2026-11-21T12:00Z and adds a laptop (seed 0x20); the laptop signs a pointer to a two-chunk manifest and an upload of it",
		UserID:        u.id.String(),
		Device:        u.laptop.ID().String(),
		Manifest:      hex.EncodeToString(mb),
		ManifestCID:   what,
		PointerRecord: hex.EncodeToString(rb),
		PointerKey:    PointerKey(u.id),
		UploadPeerID:  peer,
		UploadWhat:    what,
		UploadTime:    a.Time.Unix(),
		UploadMessage: hex.EncodeToString(BackupUploadMessage(peer, u.id, a.Device, what, a.Time)),
		UploadSig:     hex.EncodeToString(a.Signature),
	}
}

// vectorFile checks that testdata/name holds want (rewriting it first with
// -update) and returns what the file holds.
func vectorFile[V comparable](t *testing.T, name string, want V) V {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateVectors {
		b, _ := json.MarshalIndent(want, "", "  ")
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v V
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v != want {
		t.Fatalf("vectors differ from the code:\n got %+v\nwant %+v", v, want)
	}
	return v
}

func TestBackupVectors(t *testing.T) {
	v := vectorFile(t, "backup_vectors.json", makeBackupVectors(t))
	mb, _ := hex.DecodeString(v.Manifest)
	m, err := DecodeManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := m.Encode(); !bytes.Equal(again, mb) || ChunkCID(mb).String() != v.ManifestCID {
		t.Error("manifest vector does not re-encode to itself")
	}
	rb, _ := hex.DecodeString(v.PointerRecord)
	r, err := DecodePointerRecord(rb)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	if again, _ := r.Encode(); !bytes.Equal(again, rb) || r.Pointer.Manifest.String() != v.ManifestCID || PointerKey(r.Pointer.User) != v.PointerKey {
		t.Error("pointer vector does not re-encode to itself")
	}
	sig, _ := hex.DecodeString(v.UploadSig)
	a := UploadAuth{User: r.Pointer.User, Device: r.Pointer.Device, Time: time.Unix(v.UploadTime, 0), Signature: sig}
	set, err := r.VerifyDevices()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Verify(v.UploadPeerID, v.UploadWhat, set, a.Time); err != nil {
		t.Errorf("upload vector: %v", err)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	u := newBackupUser(f, 0x10, false)
	for _, n := range []int{1, 2, 17} {
		b, err := testManifest(u.id, n).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa5, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error without ErrBadManifest: %v", err)
			}
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatal("decoded manifest re-encodes differently")
		}
	})
}

func FuzzDecodePointerRecord(f *testing.F) {
	u := newBackupUser(f, 0x10, false)
	r, err := SignBackupPointer(BackupPointer{User: u.id, Device: u.phone.ID(), Manifest: ChunkCID([]byte("m")), Size: 10, Time: t0}, u.phone.Signing, u.chain)
	if err != nil {
		f.Fatal(err)
	}
	b, err := r.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0xa0})
	keys, _ := e2ee.GenerateDeviceKeys(rand.Reader)
	f.Add(BackupUploadMessage("p", u.id, keys.ID(), "w", t0))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodePointerRecord(data)
		if err != nil {
			if !errors.Is(err, ErrBadPointer) {
				t.Fatalf("error without ErrBadPointer: %v", err)
			}
			return
		}
		again, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatal("decoded record re-encodes differently")
		}
		if err := r.Verify(); err != nil && !errors.Is(err, ErrBadPointer) {
			t.Fatalf("verify error without ErrBadPointer: %v", err)
		}
	})
}

func TestPointerCheckTime(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		at time.Time
		ok bool
	}{
		{now.Add(-365 * 24 * time.Hour), true},
		{now, true},
		{now.Add(PointerTimeSkew), true},
		{now.Add(PointerTimeSkew + time.Millisecond), false},
		{now.AddDate(100, 0, 0), false},
	} {
		err := BackupPointer{Time: c.at}.CheckTime(now)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadPointer)) {
			t.Errorf("pointer dated %s at %s: %v, want ok %v", c.at, now, err, c.ok)
		}
	}
}
