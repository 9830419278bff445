package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
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
var ErrBadSignature = errors.New("e2ee: bad signature")

// ErrBadKey reports bytes that are not a valid key of the expected kind.
var ErrBadKey = errors.New("e2ee: bad key")

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func b32String(b []byte) string { return strings.ToLower(b32.EncodeToString(b)) }

// MessagingKEM returns the HPKE KEM of messaging keys, MLKEM768X25519.
func MessagingKEM() hpke.KEM { return hpke.MLKEM768X25519() }

func domainMessage(domain string, msg []byte) []byte {
	if domain == "" || strings.IndexByte(domain, 0) >= 0 {
		panic("e2ee: signature domain must be non-empty and free of NUL bytes")
	}
	m := make([]byte, 0, len(domain)+1+len(msg))
	m = append(m, domain...)
	m = append(m, 0)
	return append(m, msg...)
}

// SigningKey is a device's Ed25519 private key. Its String never prints
// the key.
type SigningKey struct{ priv ed25519.PrivateKey }

// GenerateSigningKey draws a 32-byte seed from rand.
func GenerateSigningKey(rand io.Reader) (SigningKey, error) {
	seed := make([]byte, SigningSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return SigningKey{}, fmt.Errorf("e2ee: generate signing key: %w", err)
	}
	return SigningKey{ed25519.NewKeyFromSeed(seed)}, nil
}

// SigningKeyFromSeed builds the key from its 32-byte seed (RFC 8032 private key).
func SigningKeyFromSeed(seed []byte) (SigningKey, error) {
	if len(seed) != SigningSeedSize {
		return SigningKey{}, fmt.Errorf("e2ee: signing key seed: %d bytes, want %d: %w", len(seed), SigningSeedSize, ErrBadKey)
	}
	return SigningKey{ed25519.NewKeyFromSeed(seed)}, nil
}

// Seed returns a copy of the 32-byte seed. Handle with care: it is the key.
func (k SigningKey) Seed() []byte { return bytes.Clone(k.priv.Seed()) }

// IsZero reports whether k is the zero value (no key).
func (k SigningKey) IsZero() bool { return len(k.priv) == 0 }

// Public returns the matching public key.
func (k SigningKey) Public() SigningPublic {
	var p SigningPublic
	copy(p.k[:], k.priv[SigningSeedSize:])
	return p
}

// Sign signs domain || 0x00 || msg with pure Ed25519 (RFC 8032). domain is
// one of the Domain* constants.
func (k SigningKey) Sign(domain string, msg []byte) []byte {
	if k.IsZero() {
		panic("e2ee: Sign with zero SigningKey")
	}
	return ed25519.Sign(k.priv, domainMessage(domain, msg))
}

// String never prints the key.
func (k SigningKey) String() string { return "SigningKey(redacted)" }

// GoString never prints the key.
func (k SigningKey) GoString() string { return k.String() }

// Equal reports whether k and o are the same key, in constant time.
func (k SigningKey) Equal(o SigningKey) bool {
	return len(k.priv) == len(o.priv) && subtle.ConstantTimeCompare(k.priv, o.priv) == 1
}

// SigningPublic is an Ed25519 public key. It is comparable with ==.
type SigningPublic struct{ k [SigningPublicSize]byte }

// ParseSigningPublic parses a 32-byte Ed25519 public key.
func ParseSigningPublic(b []byte) (SigningPublic, error) {
	var p SigningPublic
	if len(b) != SigningPublicSize {
		return p, fmt.Errorf("e2ee: signing public key: %d bytes, want %d: %w", len(b), SigningPublicSize, ErrBadKey)
	}
	copy(p.k[:], b)
	return p, nil
}

// Bytes returns a copy of the 32-byte key.
func (p SigningPublic) Bytes() []byte { return bytes.Clone(p.k[:]) }

// Equal reports whether p and o are the same key.
func (p SigningPublic) Equal(o SigningPublic) bool { return p == o }

// IsZero reports whether p is the zero value.
func (p SigningPublic) IsZero() bool { return p == SigningPublic{} }

// String returns the key in lower-case unpadded base32 (52 characters).
func (p SigningPublic) String() string { return b32String(p.k[:]) }

// Verify checks sig over domain || 0x00 || msg. The error wraps
// ErrBadSignature.
func (p SigningPublic) Verify(domain string, msg, sig []byte) error {
	if len(sig) != SignatureSize || !ed25519.Verify(p.k[:], domainMessage(domain, msg), sig) {
		return fmt.Errorf("e2ee: %s signature by %s: %w", domain, p, ErrBadSignature)
	}
	return nil
}

// MessagingKey is a device's HPKE MLKEM768X25519 private key, kept as its
// 32-byte seed (RFC 9180 SerializePrivateKey of this KEM). Its String never
// prints the key.
type MessagingKey struct {
	seed []byte
	priv hpke.PrivateKey
}

// GenerateMessagingKey draws a 32-byte seed from rand.
func GenerateMessagingKey(rand io.Reader) (MessagingKey, error) {
	seed := make([]byte, MessagingSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return MessagingKey{}, fmt.Errorf("e2ee: generate messaging key: %w", err)
	}
	return MessagingKeyFromSeed(seed)
}

// MessagingKeyFromSeed builds the key from its 32-byte seed.
func MessagingKeyFromSeed(seed []byte) (MessagingKey, error) {
	if len(seed) != MessagingSeedSize {
		return MessagingKey{}, fmt.Errorf("e2ee: messaging key seed: %d bytes, want %d: %w", len(seed), MessagingSeedSize, ErrBadKey)
	}
	priv, err := MessagingKEM().NewPrivateKey(seed)
	if err != nil {
		return MessagingKey{}, fmt.Errorf("e2ee: messaging key seed: %v: %w", err, ErrBadKey)
	}
	return MessagingKey{seed: bytes.Clone(seed), priv: priv}, nil
}

// Seed returns a copy of the 32-byte seed. Handle with care: it is the key.
func (k MessagingKey) Seed() []byte { return bytes.Clone(k.seed) }

// IsZero reports whether k is the zero value (no key).
func (k MessagingKey) IsZero() bool { return k.priv == nil }

// HPKE returns the key for hpke.Open / hpke.NewRecipient.
func (k MessagingKey) HPKE() hpke.PrivateKey { return k.priv }

// Public returns the matching public key.
func (k MessagingKey) Public() MessagingPublic {
	pk := k.priv.PublicKey()
	return MessagingPublic{raw: string(pk.Bytes()), pk: pk}
}

// String never prints the key.
func (k MessagingKey) String() string { return "MessagingKey(redacted)" }

// GoString never prints the key.
func (k MessagingKey) GoString() string { return k.String() }

// Equal reports whether k and o are the same key, in constant time.
func (k MessagingKey) Equal(o MessagingKey) bool {
	return len(k.seed) == len(o.seed) && subtle.ConstantTimeCompare(k.seed, o.seed) == 1
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
		return MessagingPublic{}, fmt.Errorf("e2ee: messaging public key: %d bytes, want %d: %w", len(b), MessagingPublicSize, ErrBadKey)
	}
	pk, err := MessagingKEM().NewPublicKey(b)
	if err != nil {
		return MessagingPublic{}, fmt.Errorf("e2ee: messaging public key: %v: %w", err, ErrBadKey)
	}
	return MessagingPublic{raw: string(b), pk: pk}, nil
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
	return "mlkem768x25519:" + b32String(sumCID([]byte(p.raw)).Bytes()[4:20])
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
		return nil, fmt.Errorf("e2ee: encode incomplete device public keys: %w", ErrBadKey)
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
	if err := unmarshalCanonical("device public keys", data, MaxDevicePublicSize, &w); err != nil {
		return DevicePublic{}, err
	}
	s, err := ParseSigningPublic(w.Signing)
	if err != nil {
		return DevicePublic{}, fmt.Errorf("e2ee: decode device public keys: %w", err)
	}
	m, err := ParseMessagingPublic(w.Messaging)
	if err != nil {
		return DevicePublic{}, fmt.Errorf("e2ee: decode device public keys: %w", err)
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

// DeviceKeys are a device's two private keys. MarshalBinary is the form the
// client encrypts at rest; String never prints the keys.
type DeviceKeys struct {
	Signing   SigningKey
	Messaging MessagingKey
}

// GenerateDeviceKeys draws both keys from rand (signing seed first).
func GenerateDeviceKeys(rand io.Reader) (DeviceKeys, error) {
	s, err := GenerateSigningKey(rand)
	if err != nil {
		return DeviceKeys{}, err
	}
	m, err := GenerateMessagingKey(rand)
	if err != nil {
		return DeviceKeys{}, err
	}
	return DeviceKeys{Signing: s, Messaging: m}, nil
}

// Public returns the public key bundle.
func (k DeviceKeys) Public() DevicePublic {
	return DevicePublic{Signing: k.Signing.Public(), Messaging: k.Messaging.Public()}
}

// ID returns the device's ID.
func (k DeviceKeys) ID() DeviceID { return k.Public().ID() }

// String names the device by its ID, never printing the keys.
func (k DeviceKeys) String() string {
	if k.Signing.IsZero() || k.Messaging.IsZero() {
		return "DeviceKeys(empty)"
	}
	return "DeviceKeys(" + k.ID().String() + ", redacted)"
}

// GoString never prints the keys.
func (k DeviceKeys) GoString() string { return k.String() }

// DeviceKeysVersion is the version field of the DeviceKeys encoding.
const DeviceKeysVersion = 1

// MaxDeviceKeysSize bounds an encoded DeviceKeys.
const MaxDeviceKeysSize = 80

type deviceKeysWire struct {
	Version   uint   `cbor:"0,keyasint"`
	Signing   []byte `cbor:"1,keyasint"`
	Messaging []byte `cbor:"2,keyasint"`
}

// MarshalBinary returns the private encoding: canonical CBOR
// {0: version 1, 1: Ed25519 seed (bstr 32), 2: MLKEM768X25519 seed (bstr 32)}.
// The result is secret; the caller encrypts it before storing it.
func (k DeviceKeys) MarshalBinary() ([]byte, error) {
	if k.Signing.IsZero() || k.Messaging.IsZero() {
		return nil, fmt.Errorf("e2ee: encode empty device keys: %w", ErrBadKey)
	}
	return marshalCBOR(deviceKeysWire{Version: DeviceKeysVersion, Signing: k.Signing.priv.Seed(), Messaging: k.Messaging.seed}), nil
}

// ParseDeviceKeys decodes the form written by MarshalBinary.
func ParseDeviceKeys(data []byte) (DeviceKeys, error) {
	var w deviceKeysWire
	if err := unmarshalCanonical("device keys", data, MaxDeviceKeysSize, &w); err != nil {
		return DeviceKeys{}, err
	}
	if w.Version != DeviceKeysVersion {
		return DeviceKeys{}, fmt.Errorf("e2ee: decode device keys: version %d, want %d: %w", w.Version, DeviceKeysVersion, ErrMalformed)
	}
	s, err := SigningKeyFromSeed(w.Signing)
	if err != nil {
		return DeviceKeys{}, fmt.Errorf("e2ee: decode device keys: %w", err)
	}
	m, err := MessagingKeyFromSeed(w.Messaging)
	if err != nil {
		return DeviceKeys{}, fmt.Errorf("e2ee: decode device keys: %w", err)
	}
	return DeviceKeys{Signing: s, Messaging: m}, nil
}
