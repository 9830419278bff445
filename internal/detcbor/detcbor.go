// Package detcbor sets up the CBOR codecs for everything Volo signs, hashes
// or reads from the network: core deterministic encoding (RFC 8949 4.2.1)
// and strict decoding with bounded sizes, written once for every package.
package detcbor

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// ErrMalformed reports bytes that are not a valid encoding of the expected
// record: bad CBOR, a missing or unknown field, a wrong size or type.
var ErrMalformed = errors.New("malformed encoding")

// ErrNonCanonical reports well-formed CBOR that is not in the one canonical
// (core deterministic) form of its value. Signed records and records named
// by their hash must have exactly one encoding, so such input is refused.
var ErrNonCanonical = errors.New("non-canonical encoding")

// Limits bound what a strict decoder accepts besides the whole input's
// length, which every caller checks first.
type Limits struct {
	MaxNestedLevels  int
	MaxArrayElements int
	MaxMapPairs      int
	// AllowUnknownFields accepts map keys that the target struct does not
	// name (for formats read into maps, or that may grow fields).
	AllowUnknownFields bool
}

var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// EncMode returns the core deterministic encoder.
func EncMode() cbor.EncMode { return encMode }

// Marshal encodes v in core deterministic CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// MustMarshal encodes v, a record struct of the caller's own whose
// encoding cannot fail: an error is a programming bug and panics.
func MustMarshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("detcbor: encode %T: %v", v, err))
	}
	return b
}

// StrictDecMode returns a decoder that refuses duplicate map keys,
// indefinite lengths, tags and invalid UTF-8, unknown fields (unless
// l.AllowUnknownFields), and anything past l's bounds. It panics on limits
// the library refuses, which are constants of the caller.
func StrictDecMode(l Limits) cbor.DecMode {
	opts := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   l.MaxNestedLevels,
		MaxArrayElements:  l.MaxArrayElements,
		MaxMapPairs:       l.MaxMapPairs,
		UTF8:              cbor.UTF8RejectInvalid,
	}
	if l.AllowUnknownFields {
		opts.ExtraReturnErrors = cbor.ExtraDecErrorNone
	}
	m, err := opts.DecMode()
	if err != nil {
		panic(fmt.Sprintf("detcbor: decoder limits %+v: %v", l, err))
	}
	return m
}

// UnmarshalCanonical decodes data into v (a pointer to a record struct)
// with dm, refusing inputs longer than max, trailing bytes, and any
// encoding that differs from the canonical re-encoding of the decoded
// value. Errors wrap ErrMalformed or ErrNonCanonical.
func UnmarshalCanonical(dm cbor.DecMode, data []byte, max int, v any) error {
	if len(data) > max {
		return fmt.Errorf("%d bytes, limit %d: %w", len(data), max, ErrMalformed)
	}
	if err := dm.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%v: %w", err, ErrMalformed)
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, data) {
		return ErrNonCanonical
	}
	return nil
}
