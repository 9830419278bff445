package ident

import (
	"fmt"

	"github.com/volo-chat/volo/internal/detcbor"
)

// Decoding limits of the records of this package and of the protocol
// records built on them. Each record decoder also bounds its whole input
// (MaxLinkSize, ...), which bounds every byte string inside it.
const (
	MaxNestedLevels     = 8
	MaxArrayElements    = 4096
	MaxMapPairs         = 32
	MaxByteStringLength = 1 << 20
)

// ErrMalformed reports bytes that are not a valid encoding of the expected
// record: bad CBOR, a missing or unknown field, a wrong size or type.
var ErrMalformed = detcbor.ErrMalformed

// ErrNonCanonical reports well-formed CBOR that is not in the one canonical
// (core deterministic) form of its value. Signed records and records named
// by their hash must have exactly one encoding, so such input is refused.
var ErrNonCanonical = detcbor.ErrNonCanonical

// DecMode is the strict decoder of records with this package's limits.
var DecMode = detcbor.StrictDecMode(detcbor.Limits{
	MaxNestedLevels:  MaxNestedLevels,
	MaxArrayElements: MaxArrayElements,
	MaxMapPairs:      MaxMapPairs,
})

func marshalCBOR(v any) []byte { return detcbor.MustMarshal(v) }

// UnmarshalCanonical decodes a record of at most max bytes into v with
// DecMode and checks that it is in canonical form; what names the record
// in the error, which wraps ErrMalformed or ErrNonCanonical.
func UnmarshalCanonical(what string, data []byte, max int, v any) error {
	if err := detcbor.UnmarshalCanonical(DecMode, data, max, v); err != nil {
		return fmt.Errorf("ident: decode %s: %w", what, err)
	}
	return nil
}
