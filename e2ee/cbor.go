package e2ee

import (
	"fmt"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/detcbor"
)

// marshalCBOR encodes v in core deterministic CBOR. The types given to it
// are this package's own record structs, so an error is a programming bug.
func marshalCBOR(v any) []byte { return detcbor.MustMarshal(v) }

// unmarshalCanonical decodes a record of at most max bytes into v with the
// strict decoder of ident's limits, refusing any non-canonical encoding.
// Errors wrap ident.ErrMalformed or ident.ErrNonCanonical.
func unmarshalCanonical(what string, data []byte, max int, v any) error {
	if err := detcbor.UnmarshalCanonical(ident.DecMode, data, max, v); err != nil {
		return fmt.Errorf("e2ee: decode %s: %w", what, err)
	}
	return nil
}

// idBytes is the binary form of an identifier, or nil when it is undefined.
func idBytes(defined bool, b func() []byte) []byte {
	if !defined {
		return nil
	}
	return b()
}
