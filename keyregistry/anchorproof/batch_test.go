package anchorproof

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/ident"
)

// The tree matches the published RFC 6962 reference roots and proofs of
// transparency-dev/merkle for every prefix of its reference leaves.
func TestTreeMatchesReference(t *testing.T) {
	inputs := testonly.LeafInputs()
	roots := testonly.RootHashes()
	for size := 1; size <= len(inputs); size++ {
		hs := make([][]byte, size)
		for i := range size {
			hs[i] = hasher.HashLeaf(inputs[i])
		}
		tr := NewTree(hs)
		root := tr.Root()
		if !bytes.Equal(root[:], roots[size]) {
			t.Fatalf("size %d: root %x, reference %x", size, root, roots[size])
		}
		for i := range uint64(size) {
			path, err := tr.InclusionProof(i)
			if err != nil {
				t.Fatal(err)
			}
			if len(path) != pathLen(i, uint64(size)) {
				t.Fatalf("size %d leaf %d: %d hashes, pathLen says %d", size, i, len(path), pathLen(i, uint64(size)))
			}
			if err := VerifyInclusion(i, uint64(size), hs[i], path, root); err != nil {
				t.Fatalf("size %d leaf %d: %v", size, i, err)
			}
			// Positive control above; another leaf's hash must fail.
			if err := VerifyInclusion(i, uint64(size), hs[(int(i)+1)%size], path, root); err == nil && size > 1 {
				t.Fatalf("size %d leaf %d: the proof verifies another leaf", size, i)
			}
		}
	}
}

func testBatch(t testing.TB, n int) (Batch, []userChain) {
	t.Helper()
	var b Batch
	var chains []userChain
	for len(b.Leaves) < n {
		c := testChain(t, testKeys(t), testKeys(t))
		chains = append(chains, c)
		for _, l := range c.Links {
			if len(b.Leaves) < n {
				b.Leaves = append(b.Leaves, NewLeaf(c.Set.User(), l))
			}
		}
	}
	return b, chains
}

func TestBatchRoundTrip(t *testing.T) {
	b, _ := testBatch(t, 5)
	raw := b.Encode()
	got, err := DecodeBatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), raw) || len(got.Leaves) != 5 {
		t.Fatal("batch did not round-trip")
	}
	c := BatchCID(raw)
	if c.String()[0] != 'b' || len(c.Bytes()) != 36 {
		t.Fatalf("batch CID %s", c)
	}
	if _, err := ParseBatchCID(c.Bytes()); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"empty":         Batch{}.Encode(),
		"truncated":     raw[:len(raw)-1],
		"trailing":      append(bytes.Clone(raw), 0),
		"bad user":      Batch{Leaves: []Leaf{{User: []byte("x"), Link: []byte{1}}}}.Encode(),
		"empty link":    Batch{Leaves: []Leaf{{User: b.Leaves[0].User}}}.Encode(),
		"not canonical": append([]byte{0xa2, 0x61, 'v', 0x18, 0x01}, raw[4:]...),
	} {
		if _, err := DecodeBatch(bad); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// testAnchorProof is a proof of leaf i of a fresh batch of n leaves,
// signed by a fresh peer key, and the anchor it is under.
func testAnchorProof(t testing.TB, n int, i uint64) (AnchorProof, chain.Anchor, Batch) {
	t.Helper()
	b, _ := testBatch(t, n)
	tr := TreeOf(b)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	an := chain.Anchor{Version: chain.AnchorVersion, Root: tr.Root(), TreeSize: tr.Size(), Seq: 1,
		BatchCID: BatchCID(b.Encode()).Bytes(), Node: []byte(id)}
	an.Prev[0] = 7
	sig, err := SignAnchor(key, an)
	if err != nil {
		t.Fatal(err)
	}
	inc := chain.Inclusion{Anchor: an, Block: chain.Point{Slot: 42, Hash: bytes.Repeat([]byte{1}, 32)},
		Prev: chain.Point{Slot: 41, Hash: bytes.Repeat([]byte{2}, 32)}, BlockNo: 9}
	inc.TxID[0] = 3
	p, err := ForLeaf(tr, i, inc, sig)
	if err != nil {
		t.Fatal(err)
	}
	return p, an, b
}

func TestAnchorProofRoundTripAndLimits(t *testing.T) {
	p, an, _ := testAnchorProof(t, 7, 5)
	raw := p.Encode()
	got, err := DecodeAnchorProof(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), raw) {
		t.Fatal("proof did not round-trip")
	}
	if err := VerifyAnchorSignature(an, p.Sig); err != nil {
		t.Fatal(err)
	}
	other := an
	other.Seq++
	if err := VerifyAnchorSignature(other, p.Sig); !errors.Is(err, ErrBadAnchorSignature) {
		t.Fatalf("signature over another anchor: %v", err)
	}
	mod := func(f func(*AnchorProof)) []byte {
		q := p
		q.Path = append([][]byte(nil), p.Path...)
		f(&q)
		return q.Encode()
	}
	for name, bad := range map[string][]byte{
		"version":        mod(func(q *AnchorProof) { q.V = 2 }),
		"index":          mod(func(q *AnchorProof) { q.LeafIndex = q.TreeSize }),
		"size 0":         mod(func(q *AnchorProof) { q.TreeSize = 0 }),
		"size too large": mod(func(q *AnchorProof) { q.TreeSize = MaxBatchLinks + 1 }),
		"root":           mod(func(q *AnchorProof) { q.Root = q.Root[:31] }),
		"tx":             mod(func(q *AnchorProof) { q.TxID = nil }),
		"block":          mod(func(q *AnchorProof) { q.Block.Hash = nil }),
		"prev":           mod(func(q *AnchorProof) { q.Prev.Hash = q.Prev.Hash[:5] }),
		"block no":       mod(func(q *AnchorProof) { q.BlockNo = 0 }),
		"sig":            mod(func(q *AnchorProof) { q.Sig = nil }),
		"cid":            mod(func(q *AnchorProof) { q.BatchCID = q.BatchCID[1:] }),
		"short path":     mod(func(q *AnchorProof) { q.Path = q.Path[1:] }),
		"long path":      mod(func(q *AnchorProof) { q.Path = append(q.Path, q.Path[0]) }),
		"path hash":      mod(func(q *AnchorProof) { q.Path[0] = q.Path[0][:16] }),
		"trailing":       append(bytes.Clone(raw), 0),
		"too large":      make([]byte, MaxProofSize+1),
	} {
		if _, err := DecodeAnchorProof(bad); !errors.Is(err, ErrBadProof) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The proof encoding is pinned by testdata/anchor_proof.hex
// (docs/anchoring.md): decoded and re-encoded byte for byte.
func TestAnchorProofVector(t *testing.T) {
	path := filepath.Join("testdata", "anchor_proof.hex")
	p := AnchorProof{V: 1, LeafIndex: 2, TreeSize: 3,
		BatchCID: append([]byte{0x01, 0x55, 0x12, 0x20}, bytes.Repeat([]byte{0xbc}, 32)...),
		Root:     bytes.Repeat([]byte{0xaa}, 32),
		Path:     [][]byte{bytes.Repeat([]byte{0x11}, 32)},
		TxID:     bytes.Repeat([]byte{0x22}, 32),
		Block:    BlockRef{Slot: 1000, Hash: bytes.Repeat([]byte{0x33}, 32)},
		Prev:     BlockRef{Slot: 999, Hash: bytes.Repeat([]byte{0x44}, 32)},
		BlockNo:  77,
		Sig:      bytes.Repeat([]byte{0x55}, 64),
	}
	if os.Getenv("VOLO_WRITE_VECTORS") == "1" {
		os.WriteFile(path, []byte(hex.EncodeToString(p.Encode())+"\n"), 0o644)
	}
	h, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(string(bytes.TrimSpace(h)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAnchorProof(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), raw) || !bytes.Equal(p.Encode(), raw) {
		t.Fatalf("vector does not match:\n%x\n%x", p.Encode(), raw)
	}
}

func TestLeafBindsUserAndLink(t *testing.T) {
	c := testChain(t, testKeys(t))
	d := testChain(t, testKeys(t))
	l := NewLeaf(c.Set.User(), c.Links[0])
	if bytes.Equal(l.Hash(), NewLeaf(d.Set.User(), c.Links[0]).Hash()) {
		t.Fatal("leaf hash does not depend on the user")
	}
	if bytes.Equal(l.Hash(), NewLeaf(c.Set.User(), d.Links[0]).Hash()) {
		t.Fatal("leaf hash does not depend on the link")
	}
	var _ ident.UserID = c.Set.User()
}
