package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/volo-chat/volo/ident"
)

// SigningKey is a device's Ed25519 private key. Its String never prints
// the key.
type SigningKey struct{ priv ed25519.PrivateKey }

// GenerateSigningKey draws a 32-byte seed from rand.
func GenerateSigningKey(rand io.Reader) (SigningKey, error) {
	seed := make([]byte, ident.SigningSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return SigningKey{}, fmt.Errorf("e2ee: generate signing key: %w", err)
	}
	return SigningKey{ed25519.NewKeyFromSeed(seed)}, nil
}

// SigningKeyFromSeed builds the key from its 32-byte seed (RFC 8032 private key).
func SigningKeyFromSeed(seed []byte) (SigningKey, error) {
	if len(seed) != ident.SigningSeedSize {
		return SigningKey{}, fmt.Errorf("e2ee: signing key seed: %d bytes, want %d: %w", len(seed), ident.SigningSeedSize, ident.ErrBadKey)
	}
	return SigningKey{ed25519.NewKeyFromSeed(seed)}, nil
}

// Seed returns a copy of the 32-byte seed. Handle with care: it is the key.
func (k SigningKey) Seed() []byte { return bytes.Clone(k.priv.Seed()) }

// IsZero reports whether k is the zero value (no key).
func (k SigningKey) IsZero() bool { return len(k.priv) == 0 }

// Public returns the matching public key.
func (k SigningKey) Public() ident.SigningPublic {
	return ident.SigningPublicOf(k.priv)
}

// Sign signs domain || 0x00 || msg with pure Ed25519 (RFC 8032). domain is
// one of the Domain* constants.
func (k SigningKey) Sign(domain string, msg []byte) []byte {
	if k.IsZero() {
		panic("e2ee: Sign with zero SigningKey")
	}
	return ed25519.Sign(k.priv, ident.DomainMessage(domain, msg))
}

// String never prints the key.
func (k SigningKey) String() string { return "SigningKey(redacted)" }

// GoString never prints the key.
func (k SigningKey) GoString() string { return k.String() }

// Equal reports whether k and o are the same key, in constant time.
func (k SigningKey) Equal(o SigningKey) bool {
	return len(k.priv) == len(o.priv) && subtle.ConstantTimeCompare(k.priv, o.priv) == 1
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
	seed := make([]byte, ident.MessagingSeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return MessagingKey{}, fmt.Errorf("e2ee: generate messaging key: %w", err)
	}
	return MessagingKeyFromSeed(seed)
}

// MessagingKeyFromSeed builds the key from its 32-byte seed.
func MessagingKeyFromSeed(seed []byte) (MessagingKey, error) {
	if len(seed) != ident.MessagingSeedSize {
		return MessagingKey{}, fmt.Errorf("e2ee: messaging key seed: %d bytes, want %d: %w", len(seed), ident.MessagingSeedSize, ident.ErrBadKey)
	}
	priv, err := ident.MessagingKEM().NewPrivateKey(seed)
	if err != nil {
		return MessagingKey{}, fmt.Errorf("e2ee: messaging key seed: %v: %w", err, ident.ErrBadKey)
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
func (k MessagingKey) Public() ident.MessagingPublic {
	pk := k.priv.PublicKey()
	return ident.MessagingPublicOf(pk)
}

// String never prints the key.
func (k MessagingKey) String() string { return "MessagingKey(redacted)" }

// GoString never prints the key.
func (k MessagingKey) GoString() string { return k.String() }

// Equal reports whether k and o are the same key, in constant time.
func (k MessagingKey) Equal(o MessagingKey) bool {
	return len(k.seed) == len(o.seed) && subtle.ConstantTimeCompare(k.seed, o.seed) == 1
}

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
func (k DeviceKeys) Public() ident.DevicePublic {
	return ident.DevicePublic{Signing: k.Signing.Public(), Messaging: k.Messaging.Public()}
}

// ID returns the device's ID.
func (k DeviceKeys) ID() ident.DeviceID { return k.Public().ID() }

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
		return nil, fmt.Errorf("e2ee: encode empty device keys: %w", ident.ErrBadKey)
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
		return DeviceKeys{}, fmt.Errorf("e2ee: decode device keys: version %d, want %d: %w", w.Version, DeviceKeysVersion, ident.ErrMalformed)
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
