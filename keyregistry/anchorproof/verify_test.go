package anchorproof

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/ident"
)

// anchoredBatch is a batch anchored on a real devnet through the real
// Cardano anchorer, with the proof of each of its leaves.
type anchoredBatch struct {
	dn     *devnet.Devnet
	n2c    chain.Reader
	n2n    chain.Reader
	chains []userChain
	proofs map[string][]byte // by user ID + "/" + leaf index in the user's chain
	inc    chain.Inclusion
	batch  Batch
	tree   *Tree
}

func (ab *anchoredBatch) chainProofs(c userChain) [][]byte {
	out := make([][]byte, len(c.Links))
	for i := range c.Links {
		out[i] = ab.proofs[c.Set.User().String()+"/"+string(rune('0'+i))]
	}
	return out
}

// startDevnet runs a devnet making blocks only on MakeBlock.
func startDevnet(t testing.TB) *devnet.Devnet {
	t.Helper()
	dn, err := devnet.New(devnet.Config{Dir: t.TempDir(), NodeToNode: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := dn.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Stop() })
	return dn
}

// anchorOnDevnet anchors a through the devnet's own key, making blocks
// until the anchor is depth deep.
func anchorOnDevnet(t testing.TB, dn *devnet.Devnet, a chain.Anchor, depth uint64) chain.Inclusion {
	t.Helper()
	anchorer, err := cardano.NewAnchorer(cardano.AnchorerConfig{Socket: dn.SocketPath(), Network: cardano.Devnet, KeyFile: dn.KeyFile()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer anchorer.Close()
	type result struct {
		inc chain.Inclusion
		err error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	go func() { inc, err := anchorer.Anchor(ctx, a, depth); done <- result{inc, err} }()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatal(r.err)
			}
			return r.inc
		case <-time.After(50 * time.Millisecond):
			dn.MakeBlock()
		}
	}
}

func newAnchoredBatch(t testing.TB, users int) *anchoredBatch {
	t.Helper()
	dn := startDevnet(t)
	ab := &anchoredBatch{dn: dn, proofs: make(map[string][]byte)}
	for range users {
		c := testChain(t, testKeys(t), testKeys(t))
		ab.chains = append(ab.chains, c)
		for _, l := range c.Links {
			ab.batch.Leaves = append(ab.batch.Leaves, NewLeaf(c.Set.User(), l))
		}
	}
	ab.tree = TreeOf(ab.batch)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	a := chain.Anchor{Version: chain.AnchorVersion, Root: ab.tree.Root(), TreeSize: ab.tree.Size(), Seq: 1,
		BatchCID: BatchCID(ab.batch.Encode()).Bytes(), Node: []byte(id)}
	ab.inc = anchorOnDevnet(t, dn, a, 1)
	sig, err := SignAnchor(key, ab.inc.Anchor)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, c := range ab.chains {
		for j := range c.Links {
			p, err := ForLeaf(ab.tree, uint64(i), ab.inc, sig)
			if err != nil {
				t.Fatal(err)
			}
			ab.proofs[c.Set.User().String()+"/"+string(rune('0'+j))] = p.Encode()
			i++
		}
	}
	if ab.n2c, err = cardano.DialNodeToClient(t.Context(), dn.SocketPath(), dn.Magic()); err != nil {
		t.Fatal(err)
	}
	if ab.n2n, err = cardano.DialNodeToNode(t.Context(), dn.NodeToNodeAddr(), dn.Magic()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ab.n2c.Close(); ab.n2n.Close() })
	return ab
}

func TestVerifyAnchorsEveryFieldMatters(t *testing.T) {
	ab := newAnchoredBatch(t, 3)
	c := ab.chains[1]
	user := c.Set.User()
	proofs := ab.chainProofs(c)
	for name, r := range map[string]chain.Reader{"node-to-client": ab.n2c, "node-to-node": ab.n2n} {
		v, err := VerifyAnchors(t.Context(), user, c.Links, proofs, r, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK || len(v.Devices) != 2 || !v.Devices[0].Anchored || !v.Devices[1].Anchored {
			t.Fatalf("%s: positive control fails: %+v", name, v)
		}
		if v.Links[1].Publisher == "" || v.Links[1].Depth < 1 || v.Links[1].TxID != ab.inc.TxID.String() {
			t.Fatalf("%s: verdict lacks where: %+v", name, v.Links[1])
		}
	}

	base, err := DecodeAnchorProof(proofs[1])
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b }
	cases := []struct {
		field  string
		mod    func(p *AnchorProof)
		reason string
	}{
		{"version", func(p *AnchorProof) { p.V = 2 }, "malformed"},
		{"batch CID", func(p *AnchorProof) { p.BatchCID = BatchCID([]byte("x")).Bytes() }, "another batch CID"},
		{"leaf index", func(p *AnchorProof) { p.LeafIndex ^= 1 }, "inclusion proof"},
		{"tree size", func(p *AnchorProof) { p.TreeSize++ }, ""},
		{"root", func(p *AnchorProof) { p.Root = flip(p.Root) }, "claims root"},
		{"path", func(p *AnchorProof) { p.Path = append([][]byte(nil), p.Path...); p.Path[0] = flip(p.Path[0]) }, "inclusion proof"},
		{"tx ID", func(p *AnchorProof) { p.TxID = flip(p.TxID) }, "not in block"},
		{"block slot", func(p *AnchorProof) { p.Block.Slot++ }, "block"},
		{"block hash", func(p *AnchorProof) { p.Block.Hash = flip(p.Block.Hash) }, "not on the chain"},
		{"block number", func(p *AnchorProof) { p.BlockNo++ }, "block number"},
		{"signature", func(p *AnchorProof) { p.Sig = flip(p.Sig) }, "signature"},
	}
	for _, tc := range cases {
		p := base
		tc.mod(&p)
		bad := [][]byte{proofs[0], p.Encode()}
		v, err := VerifyAnchors(t.Context(), user, c.Links, bad, ab.n2c, 1)
		if err != nil {
			t.Fatalf("%s: %v", tc.field, err)
		}
		l := v.Links[1]
		if v.OK || l.Anchored || !strings.Contains(l.Reason, tc.reason) {
			t.Errorf("tampered %s: ok %v, link 1 %q (want %q)", tc.field, v.OK, l.Reason, tc.reason)
		}
		if !v.Links[0].Anchored || v.Devices[1].Anchored || v.Devices[0].Reason != "" {
			t.Errorf("tampered %s: the verdict blames the wrong device: %+v", tc.field, v.Devices)
		}
	}

	// The previous block point only tells a reader that reads forward
	// (node-to-client) where to start: the block is named by its hash, so
	// a wrong one changes nothing the verdict rests on.
	p := base
	p.Prev.Hash = bytes.Repeat([]byte{0x77}, 32)
	for name, r := range map[string]chain.Reader{"node-to-client": ab.n2c, "node-to-node": ab.n2n} {
		v, err := VerifyAnchors(t.Context(), user, c.Links, [][]byte{proofs[0], p.Encode()}, r, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK && !strings.Contains(v.Links[1].Reason, "not on the chain") {
			t.Errorf("%s: a wrong previous point gives %q", name, v.Links[1].Reason)
		}
	}

	// A proof of another user's link, a missing proof, too little depth,
	// a chain that does not verify.
	other := ab.chainProofs(ab.chains[0])
	for name, tc := range map[string]struct {
		links, proofs [][]byte
		depth         uint64
		want          string
	}{
		"proof of another link": {c.Links, [][]byte{proofs[0], other[1]}, 1, "inclusion proof"},
		"no proof":              {c.Links, [][]byte{proofs[0], nil}, 1, "never anchored"},
		"depth":                 {c.Links, proofs, 1000, "less than the required 1000"},
	} {
		v, err := VerifyAnchors(t.Context(), user, tc.links, tc.proofs, ab.n2c, tc.depth)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK || !strings.Contains(v.Links[1].Reason, tc.want) {
			t.Errorf("%s: %+v", name, v.Links[1])
		}
	}
	v, err := VerifyAnchors(t.Context(), user, ab.chains[0].Links, proofs, ab.n2c, 1)
	if err != nil || v.OK || v.ChainError == "" {
		t.Fatalf("another user's chain: %+v, %v", v, err)
	}
}

// A revoked device is anchored only when its revocation is too.
func TestDeviceVerdictsCoverRevocation(t *testing.T) {
	links := []LinkVerdict{
		{Index: 0, Kind: ident.LinkGenesis.String(), Device: "a", Anchored: true},
		{Index: 1, Kind: ident.LinkAddDevice.String(), Device: "b", Anchored: true},
		{Index: 2, Kind: ident.LinkRevokeDevice.String(), Device: "b", Reason: "never anchored"},
	}
	d := deviceVerdicts(links)
	if len(d) != 2 || !d[0].Anchored || d[1].Anchored || !d[1].Revoked || !strings.Contains(d[1].Reason, "revocation (link 2)") {
		t.Fatalf("%+v", d)
	}
	links[2].Anchored, links[2].Reason = true, ""
	if d := deviceVerdicts(links); !d[1].Anchored || !d[1].Revoked {
		t.Fatalf("positive control: %+v", d)
	}
}
