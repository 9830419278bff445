package anchorproof

import (
	"bytes"
	"testing"
)

// FuzzDecodeAnchorProof: the proof decoder never panics, and what it
// accepts re-encodes to its input and has a path of the right length.
func FuzzDecodeAnchorProof(f *testing.F) {
	for _, i := range []uint64{0, 3, 6} {
		p, _, _ := testAnchorProof(f, 7, i)
		f.Add(p.Encode())
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeAnchorProof(data)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Encode(), data) {
			t.Fatal("accepted proof does not re-encode to its input")
		}
		if len(p.Path) != pathLen(p.LeafIndex, p.TreeSize) {
			t.Fatal("accepted a path of the wrong length")
		}
		// Checking it against any root must not panic.
		_ = VerifyInclusion(p.LeafIndex, p.TreeSize, make([]byte, 32), p.Path, [32]byte{})
	})
}

// FuzzDecodeBatch: the batch decoder never panics, and what it accepts
// re-encodes to its input and builds a tree.
func FuzzDecodeBatch(f *testing.F) {
	for _, n := range []int{1, 2, 5} {
		b, _ := testBatch(f, n)
		f.Add(b.Encode())
	}
	f.Add([]byte{0xa2, 0x61, 'v', 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Encode(), data) {
			t.Fatal("accepted batch does not re-encode to its input")
		}
		if TreeOf(b).Size() != uint64(len(b.Leaves)) {
			t.Fatal("tree size differs from the leaves")
		}
	})
}
