package anchorproof

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Limits of anchor batches (docs/anchoring.md).
const (
	// BatchVersion is the version of the batch encoding this code writes.
	BatchVersion = 1
	// MaxBatchLinks bounds the leaves of one batch; registry.batch_max_links
	// may not exceed it.
	MaxBatchLinks = 100_000
	// MaxLeafSize bounds one encoded leaf: array header, the user ID and a
	// link of at most ident.MaxLinkSize bytes with their byte-string headers.
	MaxLeafSize = 1 + (2 + 36) + (3 + ident.MaxLinkSize)
	// MaxBatchSize bounds an encoded batch.
	MaxBatchSize = 16 + 5 + MaxBatchLinks*MaxLeafSize
	// maxProofHashes bounds an inclusion proof: a tree of at most 2^64
	// leaves has at most 64 levels.
	maxProofHashes = 64
)

// ErrBadBatch reports batch bytes that do not decode, are not canonical or
// break a limit.
var ErrBadBatch = errors.New("anchorproof: bad anchor batch")

// Leaf is one leaf of an anchor batch: a link the node accepted and the
// user whose chain it extends. Its bytes are the deterministic CBOR array
// [user ID (bstr 36), link (bstr, the link's canonical encoding)].
type Leaf struct {
	_    struct{} `cbor:",toarray"`
	User []byte   // binary user ID
	Link []byte   // canonical link encoding
}

// NewLeaf is the leaf of link in user's chain.
func NewLeaf(user ident.UserID, link []byte) Leaf { return Leaf{User: user.Bytes(), Link: link} }

// Encode returns the leaf's canonical bytes, the input of its leaf hash.
func (l Leaf) Encode() []byte {
	b, err := enc.Marshal(l)
	if err != nil {
		panic(fmt.Sprintf("anchorproof: encode leaf: %v", err)) // two byte strings always encode
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
	out, err := enc.Marshal(batchWire{V: BatchVersion, Leaves: b.Leaves})
	if err != nil {
		panic(fmt.Sprintf("anchorproof: encode batch: %v", err))
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
		if _, err := ident.UserIDFromBytes(l.User); err != nil {
			return Batch{}, fmt.Errorf("%w: leaf %d: %v", ErrBadBatch, i, err)
		}
		if len(l.Link) == 0 || len(l.Link) > ident.MaxLinkSize {
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
