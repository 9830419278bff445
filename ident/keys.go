package ident

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// Signature domains. A signature by a SigningKey is always made over
// domain || 0x00 || message, so a signature made for one record type can
// never be valid for another.
const (
	DomainLink        = "volo/v1/link"     // user chain link, signed by an existing device
	DomainLinkRequest = "volo/v1/linkreq"  // add-device request, signed by the new device
	DomainRegProof    = "volo/v1/regproof" // registration proof
	DomainKeyDist     = "volo/v1/keydist"  // key distribution bundle
	DomainMsg         = "volo/v1/msg"      // message
	DomainGroup       = "volo/v1/group"    // group state
	DomainBackup      = "volo/v1/backup"   // backup pointer / header
)

// Key sizes.
const (
	SigningPublicSize   = ed25519.PublicKeySize // 32
	SigningSeedSize     = ed25519.SeedSize      // 32
	SignatureSize       = ed25519.SignatureSize // 64
	MessagingSeedSize   = 32
	MessagingPublicSize = 1184 + 32 // ML-KEM-768 encapsulation key || X25519 public key
	// MessagingKEMID is the HPKE KEM identifier of MLKEM768X25519.
	MessagingKEMID uint16 = 0x647a
)

// ErrBadSignature reports a signature that does not verify.
var ErrBadSignature = errors.New("ident: bad signature")

// ErrBadKey reports bytes that are not a valid key of the expected kind.
var ErrBadKey = errors.New("ident: bad key")

// Signer signs messages in a signature domain: a device's private signing
// key (e2ee.SigningKey) is one. Packages that build signed records take a
// Signer, so they need no private key type of their own.
type Signer interface {
	Sign(domain string, msg []byte) []byte
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Base32 writes b in lower-case unpadded base32, the text form of keys and
// random identifiers.
func Base32(b []byte) string { return strings.ToLower(b32.EncodeToString(b)) }

// ParseBase32 reads the form Base32 writes, refusing any other spelling.
func ParseBase32(s string) ([]byte, bool) {
	b, err := b32.DecodeString(strings.ToUpper(s))
	if err != nil || Base32(b) != s {
		return nil, false
	}
	return b, true
}

// MessagingKEM returns the HPKE KEM of messaging keys, MLKEM768X25519.
func MessagingKEM() hpke.KEM { return hpke.MLKEM768X25519() }

// DomainMessage is what a signature in domain covers: domain || 0x00 || msg,
// so a signature made for one record type can never be valid for another.
func DomainMessage(domain string, msg []byte) []byte {
	if domain == "" || strings.IndexByte(domain, 0) >= 0 {
		panic("ident: signature domain must be non-empty and free of NUL bytes")
	}
	m := make([]byte, 0, len(domain)+1+len(msg))
	m = append(m, domain...)
	m = append(m, 0)
	return append(m, msg...)
}

// SigningPublic is an Ed25519 public key. It is comparable with ==.
type SigningPublic struct{ k [SigningPublicSize]byte }

// ParseSigningPublic parses a 32-byte Ed25519 public key.
func ParseSigningPublic(b []byte) (SigningPublic, error) {
	var p SigningPublic
	if len(b) != SigningPublicSize {
		return p, fmt.Errorf("ident: signing public key: %d bytes, want %d: %w", len(b), SigningPublicSize, ErrBadKey)
	}
	copy(p.k[:], b)
	return p, nil
}

// SigningPublicOf returns the public half of an Ed25519 private key.
func SigningPublicOf(priv ed25519.PrivateKey) SigningPublic {
	var p SigningPublic
	copy(p.k[:], priv.Public().(ed25519.PublicKey))
	return p
}

// Bytes returns a copy of the 32-byte key.
func (p SigningPublic) Bytes() []byte { return bytes.Clone(p.k[:]) }

// Equal reports whether p and o are the same key.
func (p SigningPublic) Equal(o SigningPublic) bool { return p == o }

// IsZero reports whether p is the zero value.
func (p SigningPublic) IsZero() bool { return p == SigningPublic{} }

// String returns the key in lower-case unpadded base32 (52 characters).
func (p SigningPublic) String() string { return Base32(p.k[:]) }

// Verify checks sig over domain || 0x00 || msg. The error wraps
// ErrBadSignature.
func (p SigningPublic) Verify(domain string, msg, sig []byte) error {
	if len(sig) != SignatureSize || !ed25519.Verify(p.k[:], DomainMessage(domain, msg), sig) {
		return fmt.Errorf("ident: %s signature by %s: %w", domain, p, ErrBadSignature)
	}
	return nil
}

// MessagingPublic is an HPKE MLKEM768X25519 public key (1216 bytes: the
// ML-KEM-768 encapsulation key followed by the X25519 public key).
type MessagingPublic struct {
	raw string
	pk  hpke.PublicKey
}

// ParseMessagingPublic parses the RFC 9180 SerializePublicKey form.
func ParseMessagingPublic(b []byte) (MessagingPublic, error) {
	if len(b) != MessagingPublicSize {
		return MessagingPublic{}, fmt.Errorf("ident: messaging public key: %d bytes, want %d: %w", len(b), MessagingPublicSize, ErrBadKey)
	}
	pk, err := MessagingKEM().NewPublicKey(b)
	if err != nil {
		return MessagingPublic{}, fmt.Errorf("ident: messaging public key: %v: %w", err, ErrBadKey)
	}
	return MessagingPublic{raw: string(b), pk: pk}, nil
}

// MessagingPublicOf wraps a public key of MessagingKEM without parsing
// its bytes again.
func MessagingPublicOf(pk hpke.PublicKey) MessagingPublic {
	return MessagingPublic{raw: string(pk.Bytes()), pk: pk}
}

// Bytes returns a copy of the 1216-byte key.
func (p MessagingPublic) Bytes() []byte { return []byte(p.raw) }

// HPKE returns the key for hpke.Seal / hpke.NewSender.
func (p MessagingPublic) HPKE() hpke.PublicKey { return p.pk }

// Equal reports whether p and o are the same key.
func (p MessagingPublic) Equal(o MessagingPublic) bool { return p.raw == o.raw }

// IsZero reports whether p is the zero value.
func (p MessagingPublic) IsZero() bool { return p.raw == "" }

// String returns a short fingerprint: base32 of the first 16 bytes of
// SHA-256 over the key.
func (p MessagingPublic) String() string {
	return "mlkem768x25519:" + Base32(sumCID([]byte(p.raw)).Bytes()[4:20])
}

// DevicePublic is a device's public key bundle. Its canonical CBOR
// encoding is a map {1: signing key (bstr 32), 2: messaging key (bstr 1216)};
// the DeviceID is the CID of that encoding.
type DevicePublic struct {
	Signing   SigningPublic
	Messaging MessagingPublic
}

// MaxDevicePublicSize bounds an encoded DevicePublic.
const MaxDevicePublicSize = 1 + 1 + 2 + SigningPublicSize + 1 + 3 + MessagingPublicSize

type devicePublicWire struct {
	Signing   []byte `cbor:"1,keyasint"`
	Messaging []byte `cbor:"2,keyasint"`
}

// Encode returns the canonical CBOR encoding.
func (d DevicePublic) Encode() []byte {
	return marshalCBOR(devicePublicWire{Signing: d.Signing.k[:], Messaging: []byte(d.Messaging.raw)})
}

// MarshalCBOR writes the canonical encoding; it refuses an incomplete bundle.
func (d DevicePublic) MarshalCBOR() ([]byte, error) {
	if d.Signing.IsZero() || d.Messaging.IsZero() {
		return nil, fmt.Errorf("ident: encode incomplete device public keys: %w", ErrBadKey)
	}
	return d.Encode(), nil
}

// UnmarshalCBOR decodes the canonical encoding.
func (d *DevicePublic) UnmarshalCBOR(data []byte) error {
	v, err := DecodeDevicePublic(data)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// DecodeDevicePublic decodes the canonical encoding written by Encode.
func DecodeDevicePublic(data []byte) (DevicePublic, error) {
	var w devicePublicWire
	if err := UnmarshalCanonical("device public keys", data, MaxDevicePublicSize, &w); err != nil {
		return DevicePublic{}, err
	}
	s, err := ParseSigningPublic(w.Signing)
	if err != nil {
		return DevicePublic{}, fmt.Errorf("ident: decode device public keys: %w", err)
	}
	m, err := ParseMessagingPublic(w.Messaging)
	if err != nil {
		return DevicePublic{}, fmt.Errorf("ident: decode device public keys: %w", err)
	}
	return DevicePublic{Signing: s, Messaging: m}, nil
}

// ID returns the device's ID: CIDv1(raw, sha2-256(Encode())).
func (d DevicePublic) ID() DeviceID { return DeviceID{sumCID(d.Encode())} }

// Equal reports whether d and o hold the same keys.
func (d DevicePublic) Equal(o DevicePublic) bool {
	return d.Signing.Equal(o.Signing) && d.Messaging.Equal(o.Messaging)
}

// String names the device by its ID.
func (d DevicePublic) String() string { return "DevicePublic(" + d.ID().String() + ")" }
