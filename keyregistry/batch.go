package keyregistry

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/wire"
)

// Limits of anchor batches (docs/anchoring.md).
const (
	// BatchVersion is the version of the batch encoding this code writes.
	BatchVersion = 1
	// MaxBatchLinks bounds the leaves of one batch; registry.batch_max_links
	// may not exceed it.
	MaxBatchLinks = 100_000
	// maxLeafSize bounds one encoded leaf: array header, the user ID and a
	// link of at most e2ee.MaxLinkSize bytes with their byte-string headers.
	maxLeafSize = 1 + (2 + 36) + (3 + e2ee.MaxLinkSize)
	// MaxBatchSize bounds an encoded batch.
	MaxBatchSize = 16 + 5 + MaxBatchLinks*maxLeafSize
	// maxProofHashes bounds an inclusion proof: a tree of at most 2^64
	// leaves has at most 64 levels.
	maxProofHashes = 64
)

// ErrBadBatch reports batch bytes that do not decode, are not canonical or
// break a limit.
var ErrBadBatch = errors.New("keyregistry: bad anchor batch")

// hasher is the RFC 6962 tree hasher of anchor batches (SHA-256).
var hasher = rfc6962.New(crypto.SHA256)

// Leaf is one leaf of an anchor batch: a link the node accepted and the
// user whose chain it extends. Its bytes are the deterministic CBOR array
// [user ID (bstr 36), link (bstr, the link's canonical encoding)].
type Leaf struct {
	_    struct{} `cbor:",toarray"`
	User []byte   // binary user ID
	Link []byte   // canonical link encoding
}

// NewLeaf is the leaf of link in user's chain.
func NewLeaf(user e2ee.UserID, link []byte) Leaf { return Leaf{User: user.Bytes(), Link: link} }

// Encode returns the leaf's canonical bytes, the input of its leaf hash.
func (l Leaf) Encode() []byte {
	b, err := recEnc.Marshal(l)
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode leaf: %v", err)) // two byte strings always encode
	}
	return b
}

// Hash is the leaf's RFC 6962 leaf hash: SHA-256(0x00 || Encode()).
func (l Leaf) Hash() []byte { return hasher.HashLeaf(l.Encode()) }

// Batch is the content of one anchor: the leaves of its Merkle tree in
// order. It is stored under its CID (CIDv1, raw codec, sha2-256 of the
// encoding) by the publishing node and by every node that mirrors it.
type Batch struct {
	Leaves []Leaf
}

type batchWire struct {
	V      uint64 `cbor:"v"`
	Leaves []Leaf `cbor:"leaves"`
}

var batchDec = wire.StrictDecMode(MaxBatchLinks)

// Encode returns the batch's canonical encoding: the deterministic CBOR
// map {"leaves": [+ leaf], "v": 1}.
func (b Batch) Encode() []byte {
	out, err := recEnc.Marshal(batchWire{V: BatchVersion, Leaves: b.Leaves})
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode batch: %v", err))
	}
	return out
}

// DecodeBatch decodes a batch and checks its version, its limits and that
// it is canonical. The links inside are not verified here: each is checked
// against its user's chain when it is used.
func DecodeBatch(data []byte) (Batch, error) {
	if len(data) > MaxBatchSize {
		return Batch{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadBatch, len(data), MaxBatchSize)
	}
	var w batchWire
	if err := batchDec.Unmarshal(data, &w); err != nil {
		return Batch{}, fmt.Errorf("%w: %v", ErrBadBatch, err)
	}
	if w.V != BatchVersion {
		return Batch{}, fmt.Errorf("%w: version %d, want %d", ErrBadBatch, w.V, BatchVersion)
	}
	if len(w.Leaves) == 0 {
		return Batch{}, fmt.Errorf("%w: no leaves", ErrBadBatch)
	}
	for i, l := range w.Leaves {
		if _, err := e2ee.UserIDFromBytes(l.User); err != nil {
			return Batch{}, fmt.Errorf("%w: leaf %d: %v", ErrBadBatch, i, err)
		}
		if len(l.Link) == 0 || len(l.Link) > e2ee.MaxLinkSize {
			return Batch{}, fmt.Errorf("%w: leaf %d: link of %d bytes", ErrBadBatch, i, len(l.Link))
		}
	}
	b := Batch{Leaves: w.Leaves}
	if !bytes.Equal(b.Encode(), data) {
		return Batch{}, fmt.Errorf("%w: not canonical", ErrBadBatch)
	}
	return b, nil
}

// BatchCID is the CID of encoded batch bytes: CIDv1, raw codec, sha2-256.
func BatchCID(encoded []byte) cid.Cid {
	d := sha256.Sum256(encoded)
	m, err := mh.Encode(d[:], mh.SHA2_256)
	if err != nil {
		panic(err) // sha2-256 with a 32-byte digest always encodes
	}
	return cid.NewCidV1(cid.Raw, m)
}

// ParseBatchCID parses a batch CID in binary form and checks that it is a
// CIDv1, raw codec, sha2-256 (36 bytes).
func ParseBatchCID(b []byte) (cid.Cid, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: batch CID: %v", ErrBadBatch, err)
	}
	p := c.Prefix()
	if c.Version() != 1 || p.Codec != cid.Raw || p.MhType != mh.SHA2_256 || p.MhLength != sha256.Size || len(b) != 36 {
		return cid.Undef, fmt.Errorf("%w: batch CID %s is not CIDv1 raw sha2-256", ErrBadBatch, c)
	}
	return c, nil
}

// Tree is the RFC 6962 Merkle tree over a batch's leaf hashes, with every
// complete node kept so that inclusion proofs are cheap.
type Tree struct {
	size   uint64
	levels [][][]byte // levels[0] are the leaf hashes; levels[l][i] is node (l, i)
}

// NewTree builds the tree over leaf hashes (each 32 bytes).
func NewTree(leafHashes [][]byte) *Tree {
	t := &Tree{size: uint64(len(leafHashes)), levels: [][][]byte{leafHashes}}
	for row := leafHashes; len(row) > 1; {
		next := make([][]byte, len(row)/2)
		for i := range next {
			next[i] = hasher.HashChildren(row[2*i], row[2*i+1])
		}
		t.levels = append(t.levels, next)
		row = next
	}
	return t
}

// TreeOf builds the tree over b's leaves.
func TreeOf(b Batch) *Tree {
	hs := make([][]byte, len(b.Leaves))
	for i, l := range b.Leaves {
		hs[i] = l.Hash()
	}
	return NewTree(hs)
}

// Size is the number of leaves.
func (t *Tree) Size() uint64 { return t.size }

func (t *Tree) nodes(ids []compact.NodeID) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = t.levels[id.Level][id.Index]
	}
	return out
}

// Root is the tree head: the RFC 6962 hash of the whole tree.
func (t *Tree) Root() [32]byte {
	var root [32]byte
	if t.size == 0 {
		copy(root[:], hasher.EmptyRoot())
		return root
	}
	hs := t.nodes(compact.RangeNodes(0, t.size, nil))
	h := hs[len(hs)-1]
	for i := len(hs) - 2; i >= 0; i-- {
		h = hasher.HashChildren(hs[i], h)
	}
	copy(root[:], h)
	return root
}

// InclusionProof is the audit path of leaf index (RFC 6962 section 2.1.1).
func (t *Tree) InclusionProof(index uint64) ([][]byte, error) {
	n, err := proof.Inclusion(index, t.size)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: inclusion proof: %w", err)
	}
	return n.Rehash(t.nodes(n.IDs), hasher.HashChildren)
}

// VerifyInclusion checks that leaf hash leafHash is leaf index of a tree of
// size leaves with head root.
func VerifyInclusion(index, size uint64, leafHash []byte, path [][]byte, root [32]byte) error {
	return proof.VerifyInclusion(hasher, index, size, leafHash, path, root[:])
}
