package keyregistry

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// testAnchorProof is a proof of leaf i of a fresh batch of n leaves,
// signed by a fresh peer key, and the anchor it is under.
func testAnchorProof(t testing.TB, n int, i uint64) (anchorproof.AnchorProof, chain.Anchor) {
	t.Helper()
	var b anchorproof.Batch
	for len(b.Leaves) < n {
		c := testChain(t, testKeys(t), testKeys(t))
		for _, l := range c.Links {
			if len(b.Leaves) < n {
				b.Leaves = append(b.Leaves, anchorproof.NewLeaf(c.Set.User(), l))
			}
		}
	}
	tr := anchorproof.TreeOf(b)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	an := chain.Anchor{Version: chain.AnchorVersion, Root: tr.Root(), TreeSize: tr.Size(), Seq: 1,
		BatchCID: anchorproof.BatchCID(b.Encode()).Bytes(), Node: []byte(id)}
	an.Prev[0] = 7
	sig, err := anchorproof.SignAnchor(key, an)
	if err != nil {
		t.Fatal(err)
	}
	inc := chain.Inclusion{Anchor: an, Block: chain.Point{Slot: 42, Hash: bytes.Repeat([]byte{1}, 32)},
		Prev: chain.Point{Slot: 41, Hash: bytes.Repeat([]byte{2}, 32)}, BlockNo: 9}
	inc.TxID[0] = 3
	ann, err := newAnnouncement(inc, sig)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ann.proofFor(tr, i)
	if err != nil {
		t.Fatal(err)
	}
	return p, an
}

func TestAnnouncementChecks(t *testing.T) {
	p, an := testAnchorProof(t, 3, 0)
	txid, at, prev := p.Inclusion()
	inc := chain.Inclusion{Anchor: an, TxID: txid, Block: at, Prev: prev, BlockNo: p.BlockNo}
	ann, err := newAnnouncement(inc, p.Sig)
	if err != nil {
		t.Fatal(err)
	}
	raw := ann.Encode()
	if _, err := DecodeAnnouncement(raw); err != nil {
		t.Fatal(err)
	}
	forged := ann
	forged.Sig = bytes.Clone(ann.Sig)
	forged.Sig[0] ^= 1
	other := inc
	other.Anchor.Seq = 99
	moved, _ := newAnnouncement(other, p.Sig)
	for name, bad := range map[string][]byte{
		"forged signature":     forged.Encode(),
		"anchor not signed":    moved.Encode(),
		"trailing":             append(bytes.Clone(raw), 0),
		"too large":            make([]byte, MaxAnnouncementSize+1),
		"no block":             func() []byte { a := ann; a.Block.Hash = nil; return a.Encode() }(),
		"bad metadata":         func() []byte { a := ann; a.Metadata = []byte{0xa0}; return a.Encode() }(),
		"zero block number":    func() []byte { a := ann; a.BlockNo = 0; return a.Encode() }(),
		"unsupported version":  func() []byte { a := ann; a.V = 2; return a.Encode() }(),
		"short transaction id": func() []byte { a := ann; a.TxID = a.TxID[:8]; return a.Encode() }(),
	} {
		if _, err := DecodeAnnouncement(bad); !errors.Is(err, ErrBadAnnouncement) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeAnnouncement: the gossip validator's decoder never panics, and
// what it accepts is canonical and signed by the node it names.
func FuzzDecodeAnnouncement(f *testing.F) {
	p, an := testAnchorProof(f, 3, 1)
	txid, at, prev := p.Inclusion()
	ann, err := newAnnouncement(chain.Inclusion{Anchor: an, TxID: txid, Block: at, Prev: prev, BlockNo: p.BlockNo}, p.Sig)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ann.Encode())
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAnnouncement(data)
		if err != nil {
			return
		}
		if !bytes.Equal(a.Encode(), data) {
			t.Fatal("accepted announcement does not re-encode to its input")
		}
		if err := anchorproof.VerifyAnchorSignature(a.Anchor(), a.Sig); err != nil {
			t.Fatalf("accepted an announcement whose signature does not verify: %v", err)
		}
	})
}
