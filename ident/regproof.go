package ident

import (
	"bytes"
	"errors"
	"fmt"
)

// Nonce sizes a registration proof accepts. The node picks the nonce.
const (
	MinRegistrationNonceSize = 16
	MaxRegistrationNonceSize = 64
	// MaxRegistrationProofSize bounds an encoded RegistrationProof.
	MaxRegistrationProofSize = 1 + (1 + 2 + MaxRegistrationNonceSize) + (1 + MaxDevicePublicSize) + (1 + 2 + IDSize) + (1 + 2 + SignatureSize)
)

// Errors of registration proofs.
var (
	// ErrNonceMismatch: the proof is for another nonce than the one the node issued.
	ErrNonceMismatch = errors.New("ident: registration nonce mismatch")
	// ErrDeviceIDMismatch: the device ID does not match the public key bundle.
	ErrDeviceIDMismatch = errors.New("ident: device ID does not match public keys")
)

// RegistrationProof proves to a node that the registering client holds the
// signing key of a device: a signature (DomainRegProof) over the node's
// nonce, the device ID and both public keys.
type RegistrationProof struct {
	Nonce  []byte
	Device DevicePublic
	ID     DeviceID
	Sig    []byte
}

type regProofWire struct {
	Nonce  []byte            `cbor:"1,keyasint"`
	Device *devicePublicWire `cbor:"2,keyasint"`
	ID     []byte            `cbor:"3,keyasint"`
	Sig    []byte            `cbor:"4,keyasint,omitempty"`
}

func (p RegistrationProof) wire(withSig bool) regProofWire {
	w := regProofWire{
		Nonce:  p.Nonce,
		Device: &devicePublicWire{Signing: p.Device.Signing.k[:], Messaging: []byte(p.Device.Messaging.raw)},
		ID:     idBytes(!p.ID.IsZero(), p.ID.Bytes),
	}
	if withSig {
		w.Sig = p.Sig
	}
	return w
}

// SignedBytes is what the device signs: the encoding without Sig.
func (p RegistrationProof) SignedBytes() []byte { return marshalCBOR(p.wire(false)) }

// Encode returns the canonical CBOR encoding
// {1: nonce, 2: device public keys, 3: device ID, 4: signature}.
func (p RegistrationProof) Encode() []byte { return marshalCBOR(p.wire(true)) }

// DecodeRegistrationProof decodes a proof and checks its shape; the
// signature is checked by VerifyRegistration.
func DecodeRegistrationProof(data []byte) (RegistrationProof, error) {
	var w regProofWire
	if err := UnmarshalCanonical("registration proof", data, MaxRegistrationProofSize, &w); err != nil {
		return RegistrationProof{}, err
	}
	var p RegistrationProof
	var err error
	if len(w.Nonce) < MinRegistrationNonceSize || len(w.Nonce) > MaxRegistrationNonceSize {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: nonce of %d bytes, want %d to %d: %w",
			len(w.Nonce), MinRegistrationNonceSize, MaxRegistrationNonceSize, ErrMalformed)
	}
	p.Nonce = w.Nonce
	if w.Device == nil {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: no device: %w", ErrMalformed)
	}
	if p.Device.Signing, err = ParseSigningPublic(w.Device.Signing); err != nil {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: %w", err)
	}
	if p.Device.Messaging, err = ParseMessagingPublic(w.Device.Messaging); err != nil {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: %w", err)
	}
	if p.ID, err = DeviceIDFromBytes(w.ID); err != nil {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: %w", err)
	}
	if len(w.Sig) != SignatureSize {
		return RegistrationProof{}, fmt.Errorf("ident: decode registration proof: signature of %d bytes: %w", len(w.Sig), ErrMalformed)
	}
	p.Sig = w.Sig
	return p, nil
}

// VerifyRegistration checks a proof against the nonce the node issued: the
// nonce matches, the device ID is the CID of the bundle, and the signature
// verifies with the bundle's signing key. It returns the device's keys.
// Single use and expiry of the nonce are the node's business.
func VerifyRegistration(p RegistrationProof, nonce []byte) (DevicePublic, error) {
	if len(nonce) < MinRegistrationNonceSize || len(nonce) > MaxRegistrationNonceSize {
		return DevicePublic{}, fmt.Errorf("ident: verify registration: nonce of %d bytes, want %d to %d: %w",
			len(nonce), MinRegistrationNonceSize, MaxRegistrationNonceSize, ErrMalformed)
	}
	if !bytes.Equal(p.Nonce, nonce) {
		return DevicePublic{}, fmt.Errorf("ident: verify registration: %w", ErrNonceMismatch)
	}
	if p.Device.Signing.IsZero() || p.Device.Messaging.IsZero() {
		return DevicePublic{}, fmt.Errorf("ident: verify registration: no device keys: %w", ErrMalformed)
	}
	if id := p.Device.ID(); !id.Equal(p.ID) {
		return DevicePublic{}, fmt.Errorf("ident: verify registration: claims %s, keys are %s: %w", p.ID, id, ErrDeviceIDMismatch)
	}
	if err := p.Device.Signing.Verify(DomainRegProof, marshalCBOR(p.wire(false)), p.Sig); err != nil {
		return DevicePublic{}, fmt.Errorf("ident: verify registration of %s: %w", p.ID, err)
	}
	return p.Device, nil
}

// VerifyRegistrationGenesis is what a node checks before publishing a new
// user: the proof is valid for its nonce (VerifyRegistration), genesis is a
// valid one-link chain, and genesis names the device of the proof
// (ErrDeviceIDMismatch otherwise). It returns the new user's device set;
// its User() is the new user ID.
func VerifyRegistrationGenesis(p RegistrationProof, nonce []byte, genesis Link) (DeviceSet, error) {
	dev, err := VerifyRegistration(p, nonce)
	if err != nil {
		return DeviceSet{}, err
	}
	set, err := VerifyChain(genesis.UserID(), []Link{genesis})
	if err != nil {
		return DeviceSet{}, fmt.Errorf("ident: verify registration genesis: %w", err)
	}
	if !genesis.Device.Equal(dev) {
		return DeviceSet{}, fmt.Errorf("ident: verify registration genesis: genesis names %s, proof is for %s: %w",
			genesis.Device.ID(), p.ID, ErrDeviceIDMismatch)
	}
	return set, nil
}
