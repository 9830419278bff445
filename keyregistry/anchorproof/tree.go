package anchorproof

import (
	"crypto"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hasher is the RFC 6962 tree hasher of anchor batches (SHA-256).
var hasher = rfc6962.New(crypto.SHA256)

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
		return nil, fmt.Errorf("anchorproof: inclusion proof: %w", err)
	}
	return n.Rehash(t.nodes(n.IDs), hasher.HashChildren)
}

// VerifyInclusion checks that leaf hash leafHash is leaf index of a tree of
// size leaves with head root.
func VerifyInclusion(index, size uint64, leafHash []byte, path [][]byte, root [32]byte) error {
	return proof.VerifyInclusion(hasher, index, size, leafHash, path, root[:])
}
