package chain

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// MetadataChunkSize is the longest byte string Cardano allows in
// transaction metadata; longer values are written as a list of chunks.
const MetadataChunkSize = 64

// Limits of the variable-length anchor fields. A CIDv1 of a SHA-256 hash
// is 36 bytes and an Ed25519 libp2p peer ID 38; the limits leave room for
// other hash functions without letting metadata grow without bound.
const (
	MaxBatchCIDSize = 128
	MaxNodeIDSize   = 128
)

// ErrBadAnchor is returned by DecodeAnchorMetadata (and refused by
// EncodeAnchorMetadata) for anchor metadata that is not exactly the
// format this version writes.
var ErrBadAnchor = errors.New("chain: bad anchor metadata")

// The keys of the anchor metadata map.
const (
	keyVersion  = "v"
	keyRoot     = "root"
	keyTreeSize = "tree_size"
	keySeq      = "seq"
	keyPrev     = "prev"
	keyBatchCID = "batch_cid"
	keyNode     = "node"
)

var anchorKeys = []string{keyVersion, keyRoot, keyTreeSize, keySeq, keyPrev, keyBatchCID, keyNode}

var (
	anchorEncMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	anchorDecMode = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey:       cbor.DupMapKeyEnforcedAPF,
			IndefLength:     cbor.IndefLengthForbidden,
			TagsMd:          cbor.TagsForbidden,
			MaxNestedLevels: 4,
			// The library's smallest limits; the field checks below are
			// exact.
			MaxArrayElements: 16,
			MaxMapPairs:      16,
			UTF8:             cbor.UTF8RejectInvalid,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// Check reports whether a can be published: the current version, a
// non-empty batch, a sequence number from 1, and fields within their
// limits.
func (a Anchor) Check() error {
	switch {
	case a.Version != AnchorVersion:
		return fmt.Errorf("%w: version %d, want %d", ErrBadAnchor, a.Version, AnchorVersion)
	case a.TreeSize == 0:
		return fmt.Errorf("%w: empty tree", ErrBadAnchor)
	case a.Seq == 0:
		return fmt.Errorf("%w: sequence number 0 (anchors count from 1)", ErrBadAnchor)
	case len(a.BatchCID) == 0 || len(a.BatchCID) > MaxBatchCIDSize:
		return fmt.Errorf("%w: batch CID of %d bytes (1 to %d)", ErrBadAnchor, len(a.BatchCID), MaxBatchCIDSize)
	case len(a.Node) == 0 || len(a.Node) > MaxNodeIDSize:
		return fmt.Errorf("%w: node ID of %d bytes (1 to %d)", ErrBadAnchor, len(a.Node), MaxNodeIDSize)
	}
	return nil
}

// EncodeAnchorMetadata encodes a as the metadata value stored under
// MetadataLabel: a CBOR map (core deterministic encoding) with the keys
// "v", "root", "tree_size", "seq", "prev", "batch_cid" and "node"; byte
// strings longer than MetadataChunkSize are a list of chunks of that size
// (the last one shorter).
func EncodeAnchorMetadata(a Anchor) ([]byte, error) {
	if err := a.Check(); err != nil {
		return nil, err
	}
	m := map[string]any{
		keyVersion:  a.Version,
		keyRoot:     chunked(a.Root[:]),
		keyTreeSize: a.TreeSize,
		keySeq:      a.Seq,
		keyPrev:     chunked(a.Prev[:]),
		keyBatchCID: chunked(a.BatchCID),
		keyNode:     chunked(a.Node),
	}
	b, err := anchorEncMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("chain: encode anchor metadata: %w", err)
	}
	return b, nil
}

// chunked is b as metadata: itself when short enough, else a list of
// MetadataChunkSize-byte pieces.
func chunked(b []byte) any {
	if len(b) <= MetadataChunkSize {
		return b
	}
	var parts [][]byte
	for len(b) > 0 {
		n := min(len(b), MetadataChunkSize)
		parts = append(parts, b[:n])
		b = b[n:]
	}
	return parts
}

// DecodeAnchorMetadata decodes the metadata value stored under
// MetadataLabel. It is strict: exactly the seven keys, each of its type
// and size, the current version, and the encoding EncodeAnchorMetadata
// produces byte for byte (so one anchor has one encoding).
func DecodeAnchorMetadata(b []byte) (Anchor, error) {
	var m map[string]cbor.RawMessage
	if err := anchorDecMode.Unmarshal(b, &m); err != nil {
		return Anchor{}, fmt.Errorf("%w: %v", ErrBadAnchor, err)
	}
	if len(m) != len(anchorKeys) {
		return Anchor{}, fmt.Errorf("%w: %d keys, want %d", ErrBadAnchor, len(m), len(anchorKeys))
	}
	for _, k := range anchorKeys {
		if _, ok := m[k]; !ok {
			return Anchor{}, fmt.Errorf("%w: no %q", ErrBadAnchor, k)
		}
	}
	var a Anchor
	var err error
	if a.Version, err = decodeUint(m, keyVersion); err != nil {
		return Anchor{}, err
	}
	if a.Version != AnchorVersion {
		return Anchor{}, fmt.Errorf("%w: version %d, this code reads %d", ErrBadAnchor, a.Version, AnchorVersion)
	}
	if a.TreeSize, err = decodeUint(m, keyTreeSize); err != nil {
		return Anchor{}, err
	}
	if a.Seq, err = decodeUint(m, keySeq); err != nil {
		return Anchor{}, err
	}
	root, err := decodeChunked(m, keyRoot, len(a.Root))
	if err != nil {
		return Anchor{}, err
	}
	if len(root) != len(a.Root) {
		return Anchor{}, fmt.Errorf("%w: root of %d bytes, want %d", ErrBadAnchor, len(root), len(a.Root))
	}
	copy(a.Root[:], root)
	prev, err := decodeChunked(m, keyPrev, len(a.Prev))
	if err != nil {
		return Anchor{}, err
	}
	if len(prev) != len(a.Prev) {
		return Anchor{}, fmt.Errorf("%w: prev of %d bytes, want %d", ErrBadAnchor, len(prev), len(a.Prev))
	}
	copy(a.Prev[:], prev)
	if a.BatchCID, err = decodeChunked(m, keyBatchCID, MaxBatchCIDSize); err != nil {
		return Anchor{}, err
	}
	if a.Node, err = decodeChunked(m, keyNode, MaxNodeIDSize); err != nil {
		return Anchor{}, err
	}
	if err := a.Check(); err != nil {
		return Anchor{}, err
	}
	canon, err := EncodeAnchorMetadata(a)
	if err != nil {
		return Anchor{}, err
	}
	if !bytes.Equal(canon, b) {
		return Anchor{}, fmt.Errorf("%w: not the canonical encoding", ErrBadAnchor)
	}
	return a, nil
}

func decodeUint(m map[string]cbor.RawMessage, key string) (uint64, error) {
	var v uint64
	if len(m[key]) == 0 || m[key][0]>>5 != 0 {
		return 0, fmt.Errorf("%w: %q is not an unsigned integer", ErrBadAnchor, key)
	}
	if err := anchorDecMode.Unmarshal(m[key], &v); err != nil {
		return 0, fmt.Errorf("%w: %q: %v", ErrBadAnchor, key, err)
	}
	return v, nil
}

// decodeChunked reads a byte string or a list of byte strings of at
// most MetadataChunkSize bytes each, joined, at most limit bytes.
func decodeChunked(m map[string]cbor.RawMessage, key string, limit int) ([]byte, error) {
	raw := m[key]
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: %q is empty", ErrBadAnchor, key)
	}
	var parts [][]byte
	switch raw[0] >> 5 {
	case 2: // byte string
		var b []byte
		if err := anchorDecMode.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadAnchor, key, err)
		}
		parts = [][]byte{b}
	case 4: // array
		var items []cbor.RawMessage
		if err := anchorDecMode.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadAnchor, key, err)
		}
		for _, it := range items {
			if len(it) == 0 || it[0]>>5 != 2 {
				return nil, fmt.Errorf("%w: %q holds a list item that is not a byte string", ErrBadAnchor, key)
			}
			var b []byte
			if err := anchorDecMode.Unmarshal(it, &b); err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrBadAnchor, key, err)
			}
			parts = append(parts, b)
		}
	default:
		return nil, fmt.Errorf("%w: %q is not a byte string or a list of them", ErrBadAnchor, key)
	}
	var out []byte
	for _, p := range parts {
		if len(p) > MetadataChunkSize {
			return nil, fmt.Errorf("%w: %q has a byte string of %d bytes (Cardano allows %d)", ErrBadAnchor, key, len(p), MetadataChunkSize)
		}
		if len(out)+len(p) > limit {
			return nil, fmt.Errorf("%w: %q longer than %d bytes", ErrBadAnchor, key, limit)
		}
		out = append(out, p...)
	}
	return out, nil
}
