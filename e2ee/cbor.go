package e2ee

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Decoding limits shared by every CBOR decoder in this package. Each record
// decoder also bounds its whole input (MaxLinkSize, ...), which bounds every
// byte string inside it; MaxByteStringLength is the bound for records that
// have no tighter one.
const (
	MaxNestedLevels     = 8
	MaxArrayElements    = 4096
	MaxMapPairs         = 32
	MaxByteStringLength = 1 << 20
)

// ErrMalformed reports bytes that are not a valid encoding of the expected
// record: bad CBOR, a missing or unknown field, a wrong size or type.
var ErrMalformed = errors.New("e2ee: malformed encoding")

// ErrNonCanonical reports well-formed CBOR that is not in the one canonical
// (core deterministic) form of its value. Signed records and records named
// by their hash must have exactly one encoding, so such input is refused.
var ErrNonCanonical = errors.New("e2ee: non-canonical encoding")

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   MaxNestedLevels,
		MaxArrayElements:  MaxArrayElements,
		MaxMapPairs:       MaxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshalCBOR encodes v in core deterministic CBOR. The types given to it
// are this package's own record structs, so an error is a programming bug.
func marshalCBOR(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("e2ee: encode %T: %v", v, err))
	}
	return b
}

// unmarshalCanonical decodes data into v (a pointer to a record struct),
// refusing unknown fields, duplicate keys, tags, indefinite lengths, trailing
// bytes, inputs longer than max, and any encoding that differs from the
// canonical re-encoding of the decoded value.
func unmarshalCanonical(what string, data []byte, max int, v any) error {
	if len(data) > max {
		return fmt.Errorf("e2ee: decode %s: %d bytes, limit %d: %w", what, len(data), max, ErrMalformed)
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("e2ee: decode %s: %v: %w", what, err, ErrMalformed)
	}
	if !bytes.Equal(marshalCBOR(v), data) {
		return fmt.Errorf("e2ee: decode %s: %w", what, ErrNonCanonical)
	}
	return nil
}
