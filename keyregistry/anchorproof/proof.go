// Package anchorproof is the format of Volo's anchor batches and anchor
// proofs, and the offline verifier auditors run: it checks a user chain's
// proofs against a Cardano chain.Reader without any node service.
package anchorproof

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/wire"
)

// Limits of an anchor proof.
const (
	// ProofVersion is the version of the anchor proof encoding.
	ProofVersion = 1
	// MaxSignatureSize bounds a publisher signature (Ed25519 is 64 bytes;
	// other libp2p key types are larger, RSA up to 512).
	MaxSignatureSize = 512
	// MaxProofSize bounds an encoded AnchorProof.
	MaxProofSize = 64 + 3*40 + (3 + maxProofHashes*(2+32)) + 2*48 + 3 + MaxSignatureSize
)

// ErrBadProof reports anchor proof bytes that do not decode, are not
// canonical or break a limit.
var ErrBadProof = errors.New("anchorproof: bad anchor proof")

// BlockRef names a block on the chain: its slot and header hash.
type BlockRef struct {
	_    struct{} `cbor:",toarray"`
	Slot uint64
	Hash []byte
}

// Point is the chain.Point r names.
func (r BlockRef) Point() chain.Point {
	return chain.Point{Slot: r.Slot, Hash: bytes.Clone(r.Hash)}
}

// BlockRefOf is the BlockRef naming p.
func BlockRefOf(p chain.Point) BlockRef { return BlockRef{Slot: p.Slot, Hash: bytes.Clone(p.Hash)} }

// AnchorProof is what a verifier needs to check that one link was anchored:
// the batch and the leaf's place in it, the inclusion proof against the
// batch's root, where the anchor transaction is on the chain, and the
// publisher's signature over the anchor. Encoded as deterministic CBOR with
// integer keys (docs/anchoring.md).
type AnchorProof struct {
	V         uint64   `cbor:"1,keyasint"`  // ProofVersion
	BatchCID  []byte   `cbor:"2,keyasint"`  // binary CID of the batch
	LeafIndex uint64   `cbor:"3,keyasint"`  // the link's leaf in the batch
	TreeSize  uint64   `cbor:"4,keyasint"`  // leaves in the batch
	Root      []byte   `cbor:"5,keyasint"`  // the tree head the proof leads to (32 bytes)
	Path      [][]byte `cbor:"6,keyasint"`  // RFC 6962 inclusion proof, leaf to root
	TxID      []byte   `cbor:"7,keyasint"`  // the anchor transaction (32 bytes)
	Block     BlockRef `cbor:"8,keyasint"`  // the block holding it
	Prev      BlockRef `cbor:"9,keyasint"`  // the block before it (empty hash: the origin)
	BlockNo   uint64   `cbor:"10,keyasint"` // the block's number
	Sig       []byte   `cbor:"11,keyasint"` // publisher's signature (DomainAnchor)
}

var proofDec = wire.StrictDecMode(maxProofHashes)

// enc is the deterministic (core) CBOR encoding of proofs, leaves and
// batches.
var enc = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// Encode returns the proof's canonical encoding.
func (p AnchorProof) Encode() []byte {
	b, err := enc.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("anchorproof: encode anchor proof: %v", err))
	}
	return b
}

// DecodeAnchorProof decodes a proof and checks its shape: version, sizes of
// every field, a leaf index inside the tree, a proof path of the length
// RFC 6962 gives for that index and size, and the canonical encoding.
func DecodeAnchorProof(data []byte) (AnchorProof, error) {
	if len(data) > MaxProofSize {
		return AnchorProof{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadProof, len(data), MaxProofSize)
	}
	var p AnchorProof
	if err := proofDec.Unmarshal(data, &p); err != nil {
		return AnchorProof{}, fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	if err := p.check(); err != nil {
		return AnchorProof{}, err
	}
	if !bytes.Equal(p.Encode(), data) {
		return AnchorProof{}, fmt.Errorf("%w: not canonical", ErrBadProof)
	}
	return p, nil
}

func (p AnchorProof) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadProof}, a...)...)
	}
	switch {
	case p.V != ProofVersion:
		return bad("version %d, want %d", p.V, ProofVersion)
	case p.TreeSize == 0 || p.TreeSize > MaxBatchLinks:
		return bad("tree size %d not in [1, %d]", p.TreeSize, MaxBatchLinks)
	case p.LeafIndex >= p.TreeSize:
		return bad("leaf index %d outside a tree of %d", p.LeafIndex, p.TreeSize)
	case len(p.Root) != 32:
		return bad("root of %d bytes, want 32", len(p.Root))
	case len(p.TxID) != 32:
		return bad("transaction ID of %d bytes, want 32", len(p.TxID))
	case len(p.Block.Hash) != 32:
		return bad("block hash of %d bytes, want 32", len(p.Block.Hash))
	case len(p.Prev.Hash) != 0 && len(p.Prev.Hash) != 32:
		return bad("previous block hash of %d bytes, want 32 or none", len(p.Prev.Hash))
	case p.BlockNo == 0:
		return bad("block number 0")
	case len(p.Sig) == 0 || len(p.Sig) > MaxSignatureSize:
		return bad("signature of %d bytes", len(p.Sig))
	}
	if _, err := ParseBatchCID(p.BatchCID); err != nil {
		return bad("%v", err)
	}
	if want := pathLen(p.LeafIndex, p.TreeSize); len(p.Path) != want {
		return bad("inclusion proof of %d hashes, want %d for leaf %d of %d", len(p.Path), want, p.LeafIndex, p.TreeSize)
	}
	for i, h := range p.Path {
		if len(h) != 32 {
			return bad("inclusion proof hash %d of %d bytes", i, len(h))
		}
	}
	return nil
}

// pathLen is the length of the RFC 6962 inclusion proof of leaf index in a
// tree of size leaves.
func pathLen(index, size uint64) int {
	inner := bits.Len64(index ^ (size - 1))
	return inner + bits.OnesCount64(index>>inner)
}

// ForLeaf is the anchor proof of leaf i of tree t, whose root was anchored
// as inc says and signed by its publisher with sig (SignAnchor).
func ForLeaf(t *Tree, i uint64, inc chain.Inclusion, sig []byte) (AnchorProof, error) {
	path, err := t.InclusionProof(i)
	if err != nil {
		return AnchorProof{}, err
	}
	return AnchorProof{V: ProofVersion, BatchCID: bytes.Clone(inc.Anchor.BatchCID), LeafIndex: i, TreeSize: t.Size(),
		Root: bytes.Clone(inc.Anchor.Root[:]), Path: path, TxID: bytes.Clone(inc.TxID[:]), Block: BlockRefOf(inc.Block),
		Prev: BlockRefOf(inc.Prev), BlockNo: inc.BlockNo, Sig: sig}, nil
}

// Cid is the proof's batch CID.
func (p AnchorProof) Cid() cid.Cid { c, _ := cid.Cast(p.BatchCID); return c }

// Inclusion is where the proof says the anchor landed.
func (p AnchorProof) Inclusion() (chain.TxID, chain.Point, chain.Point) {
	var id chain.TxID
	copy(id[:], p.TxID)
	return id, p.Block.Point(), p.Prev.Point()
}
