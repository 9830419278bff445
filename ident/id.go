package ident

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/volo-chat/volo/internal/detcbor"
)

// Every identifier in Volo is a CIDv1 with the raw codec and a sha2-256
// multihash over some bytes: 36 bytes in binary, "b" + 58 base32 characters
// as text.
const (
	IDSize     = 4 + sha256.Size // binary length of an identifier
	IDTextSize = 1 + 58          // text length of an identifier
)

// cidPrefix is the binary prefix of every identifier: CID version 1, codec
// raw (0x55), multihash sha2-256 (0x12) of length 32 (0x20).
var cidPrefix = [4]byte{0x01, 0x55, 0x12, 0x20}

// ErrBadID reports bytes or text that are not a Volo identifier.
var ErrBadID = errors.New("ident: bad identifier")

func sumCID(data []byte) cid.Cid {
	d := sha256.Sum256(data)
	m, err := mh.Encode(d[:], mh.SHA2_256)
	if err != nil {
		panic(err) // sha2-256 with a 32-byte digest always encodes
	}
	return cid.NewCidV1(cid.Raw, m)
}

func castCID(what string, b []byte) (cid.Cid, error) {
	if len(b) != IDSize || !bytes.Equal(b[:4], cidPrefix[:]) {
		return cid.Undef, fmt.Errorf("ident: parse %s: want %d bytes CIDv1 raw sha2-256: %w", what, IDSize, ErrBadID)
	}
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("ident: parse %s: %v: %w", what, err, ErrBadID)
	}
	return c, nil
}

func decodeCID(what, s string) (cid.Cid, error) {
	if len(s) != IDTextSize || s[0] != 'b' {
		return cid.Undef, fmt.Errorf("ident: parse %s %q: want %d characters of base32 (\"b...\"): %w", what, s, IDTextSize, ErrBadID)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("ident: parse %s %q: %v: %w", what, s, err, ErrBadID)
	}
	if _, err := castCID(what, c.Bytes()); err != nil {
		return cid.Undef, err
	}
	// One identifier, one spelling: refuse upper case and other variants
	// the multibase decoder tolerates.
	if c.String() != s {
		return cid.Undef, fmt.Errorf("ident: parse %s %q: not in canonical lower-case base32: %w", what, s, ErrBadID)
	}
	return c, nil
}

func marshalCIDCBOR(c cid.Cid) ([]byte, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("ident: encode undefined identifier: %w", ErrBadID)
	}
	return detcbor.Marshal(c.Bytes())
}

func unmarshalCIDCBOR(what string, data []byte) (cid.Cid, error) {
	var b []byte
	if err := DecMode.Unmarshal(data, &b); err != nil {
		return cid.Undef, fmt.Errorf("ident: decode %s: %v: %w", what, err, ErrBadID)
	}
	return castCID(what, b)
}

// DeviceID names a device: the CID of its DevicePublic's canonical CBOR
// encoding. The zero DeviceID is undefined and never valid.
type DeviceID struct{ c cid.Cid }

// ParseDeviceID parses the text form produced by DeviceID.String.
func ParseDeviceID(s string) (DeviceID, error) {
	c, err := decodeCID("device ID", s)
	return DeviceID{c}, err
}

// DeviceIDFromBytes parses the binary form produced by DeviceID.Bytes.
func DeviceIDFromBytes(b []byte) (DeviceID, error) {
	c, err := castCID("device ID", b)
	return DeviceID{c}, err
}

// String returns the multibase base32 form ("b..."), or "DeviceID(undefined)".
func (id DeviceID) String() string {
	if !id.c.Defined() {
		return "DeviceID(undefined)"
	}
	return id.c.String()
}

// Bytes returns the 36-byte binary CID.
func (id DeviceID) Bytes() []byte { return id.c.Bytes() }

// Equal reports whether id and o name the same device.
func (id DeviceID) Equal(o DeviceID) bool { return id.c.Equals(o.c) }

// IsZero reports whether id is the zero (undefined) DeviceID.
func (id DeviceID) IsZero() bool { return !id.c.Defined() }

// Compare orders device IDs by their binary form.
func (id DeviceID) Compare(o DeviceID) int { return bytes.Compare(id.c.Bytes(), o.c.Bytes()) }

// MarshalCBOR encodes the ID as a CBOR byte string holding the binary CID.
func (id DeviceID) MarshalCBOR() ([]byte, error) { return marshalCIDCBOR(id.c) }

// UnmarshalCBOR decodes the form written by MarshalCBOR.
func (id *DeviceID) UnmarshalCBOR(data []byte) error {
	c, err := unmarshalCIDCBOR("device ID", data)
	if err != nil {
		return err
	}
	id.c = c
	return nil
}

// UserID names a user: the CID of the canonical CBOR encoding of the user's
// genesis link. The zero UserID is undefined and never valid.
type UserID struct{ c cid.Cid }

// ParseUserID parses the text form produced by UserID.String.
func ParseUserID(s string) (UserID, error) {
	c, err := decodeCID("user ID", s)
	return UserID{c}, err
}

// UserIDFromBytes parses the binary form produced by UserID.Bytes.
func UserIDFromBytes(b []byte) (UserID, error) {
	c, err := castCID("user ID", b)
	return UserID{c}, err
}

// String returns the multibase base32 form ("b..."), or "UserID(undefined)".
func (id UserID) String() string {
	if !id.c.Defined() {
		return "UserID(undefined)"
	}
	return id.c.String()
}

// Bytes returns the 36-byte binary CID.
func (id UserID) Bytes() []byte { return id.c.Bytes() }

// Equal reports whether id and o name the same user.
func (id UserID) Equal(o UserID) bool { return id.c.Equals(o.c) }

// IsZero reports whether id is the zero (undefined) UserID.
func (id UserID) IsZero() bool { return !id.c.Defined() }

// Compare orders user IDs by their binary form.
func (id UserID) Compare(o UserID) int { return bytes.Compare(id.c.Bytes(), o.c.Bytes()) }

// MarshalCBOR encodes the ID as a CBOR byte string holding the binary CID.
func (id UserID) MarshalCBOR() ([]byte, error) { return marshalCIDCBOR(id.c) }

// UnmarshalCBOR decodes the form written by MarshalCBOR.
func (id *UserID) UnmarshalCBOR(data []byte) error {
	c, err := unmarshalCIDCBOR("user ID", data)
	if err != nil {
		return err
	}
	id.c = c
	return nil
}

// LinkID names one link of a user chain: the CID of the link's canonical
// CBOR encoding. A user's ID is the LinkID of its genesis link.
type LinkID struct{ c cid.Cid }

// LinkIDFromBytes parses the binary form produced by LinkID.Bytes.
func LinkIDFromBytes(b []byte) (LinkID, error) {
	c, err := castCID("link ID", b)
	return LinkID{c}, err
}

// String returns the multibase base32 form ("b..."), or "LinkID(undefined)".
func (id LinkID) String() string {
	if !id.c.Defined() {
		return "LinkID(undefined)"
	}
	return id.c.String()
}

// Bytes returns the 36-byte binary CID.
func (id LinkID) Bytes() []byte { return id.c.Bytes() }

// Equal reports whether id and o name the same link.
func (id LinkID) Equal(o LinkID) bool { return id.c.Equals(o.c) }

// IsZero reports whether id is the zero (undefined) LinkID.
func (id LinkID) IsZero() bool { return !id.c.Defined() }

// MarshalCBOR encodes the ID as a CBOR byte string holding the binary CID.
func (id LinkID) MarshalCBOR() ([]byte, error) { return marshalCIDCBOR(id.c) }

// UnmarshalCBOR decodes the form written by MarshalCBOR.
func (id *LinkID) UnmarshalCBOR(data []byte) error {
	c, err := unmarshalCIDCBOR("link ID", data)
	if err != nil {
		return err
	}
	id.c = c
	return nil
}
