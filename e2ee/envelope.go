package e2ee

import (
	"crypto/hpke"
	"errors"
	"fmt"

	"github.com/volo-chat/volo/ident"
)

// Envelope sealing (docs/protocol.md, "Envelope sealing"): what a relay
// carries for one recipient device is an HPKE seal of the sender's user ID,
// the kind of the content and its body, so a node sees only the recipient.
const (
	// MaxSealedBodySize bounds the body of a sealed envelope: a message of
	// the largest size, or a key bundle of up to a few hundred devices.
	MaxSealedBodySize = MaxMessageSize
	// sealedContentOverhead bounds the CBOR around the body: a map header,
	// three keys, the kind, the 36-byte user ID and two byte-string heads.
	sealedContentOverhead = 64
	// MaxSealedEnvelopeSize bounds a sealed envelope: HPKE's encapsulated
	// key, the sealed content and the AES-256-GCM tag.
	MaxSealedEnvelopeSize = hpkeEncSize + MaxSealedBodySize + sealedContentOverhead + 16

	envelopeInfoLabel = "volo/v1/envelope"
)

// EnvelopeKind says what a sealed envelope holds.
type EnvelopeKind uint8

// Envelope kinds.
const (
	EnvelopeMessage   EnvelopeKind = 1 // an encoded Message
	EnvelopeKeyBundle EnvelopeKind = 2 // an encoded KeyBundle
)

func (k EnvelopeKind) String() string {
	switch k {
	case EnvelopeMessage:
		return "message"
	case EnvelopeKeyBundle:
		return "key bundle"
	}
	return fmt.Sprintf("EnvelopeKind(%d)", uint8(k))
}

// ErrEnvelopeOpen reports a sealed envelope that HPKE cannot open with the
// device's messaging key: it was sealed to another device, or changed.
var ErrEnvelopeOpen = errors.New("e2ee: envelope does not open (another recipient, or tampered)")

// SealedContent is what an envelope holds once opened.
type SealedContent struct {
	Kind   EnvelopeKind
	Sender ident.UserID // the sending user, as the sender stated it
	Body   []byte       // an encoded Message or KeyBundle, checked by their decoders
}

type sealedContentWire struct {
	Kind   uint64 `cbor:"1,keyasint"`
	Sender []byte `cbor:"2,keyasint"` // binary user ID (UserID.Bytes)
	Body   []byte `cbor:"3,keyasint"`
}

// envelopeInfo is the HPKE info: "volo/v1/envelope" || 0x00 || recipient
// device ID bytes, so an envelope opened by one device cannot be passed off
// as sealed to another.
func envelopeInfo(to ident.DeviceID) []byte {
	b := make([]byte, 0, len(envelopeInfoLabel)+1+ident.IDSize)
	b = append(append(b, envelopeInfoLabel...), 0)
	return append(b, to.Bytes()...)
}

// SealEnvelope seals body (kind says what it is) from sender to the device
// to: HPKE base mode, MLKEM768X25519, HKDF-SHA256, AES-256-GCM. The Sender
// is only a claim: the receiver checks it against the signature inside the
// body (OpenKeyBundle, ReceiverSession.Decrypt). HPKE draws its randomness
// from crypto/rand.
func SealEnvelope(to ident.DevicePublic, kind EnvelopeKind, sender ident.UserID, body []byte) ([]byte, error) {
	if kind != EnvelopeMessage && kind != EnvelopeKeyBundle {
		return nil, fmt.Errorf("e2ee: seal envelope: %s: %w", kind, ident.ErrMalformed)
	}
	if sender.IsZero() {
		return nil, fmt.Errorf("e2ee: seal envelope: no sender: %w", ident.ErrBadID)
	}
	if len(body) == 0 || len(body) > MaxSealedBodySize {
		return nil, fmt.Errorf("e2ee: seal envelope: body of %d bytes (1 to %d): %w", len(body), MaxSealedBodySize, ident.ErrMalformed)
	}
	if to.Messaging.IsZero() {
		return nil, fmt.Errorf("e2ee: seal envelope: recipient without a messaging key: %w", ident.ErrBadKey)
	}
	pt := marshalCBOR(sealedContentWire{Kind: uint64(kind), Sender: sender.Bytes(), Body: body})
	ct, err := hpke.Seal(to.Messaging.HPKE(), hpke.HKDFSHA256(), hpke.AES256GCM(), envelopeInfo(to.ID()), pt)
	if err != nil {
		return nil, fmt.Errorf("e2ee: seal envelope to %s: %w", to.ID(), err)
	}
	return ct, nil
}

// OpenEnvelope opens an envelope sealed to the device of keys. A wrong
// recipient or any changed byte gives ErrEnvelopeOpen; content that opens
// but is not a canonical sealed content gives ErrMalformed or
// ErrNonCanonical.
func OpenEnvelope(keys DeviceKeys, ciphertext []byte) (SealedContent, error) {
	if len(ciphertext) > MaxSealedEnvelopeSize {
		return SealedContent{}, fmt.Errorf("e2ee: open envelope: %d bytes, limit %d: %w", len(ciphertext), MaxSealedEnvelopeSize, ident.ErrMalformed)
	}
	if len(ciphertext) < hpkeEncSize+16 {
		return SealedContent{}, fmt.Errorf("e2ee: open envelope: %d bytes: %w", len(ciphertext), ErrEnvelopeOpen)
	}
	if keys.Messaging.IsZero() {
		return SealedContent{}, fmt.Errorf("e2ee: open envelope: no messaging key: %w", ident.ErrBadKey)
	}
	pt, err := hpke.Open(keys.Messaging.HPKE(), hpke.HKDFSHA256(), hpke.AES256GCM(), envelopeInfo(keys.ID()), ciphertext)
	if err != nil {
		return SealedContent{}, fmt.Errorf("e2ee: open envelope for %s: %w", keys.ID(), ErrEnvelopeOpen)
	}
	return decodeSealedContent(pt)
}

// decodeSealedContent decodes and checks the plaintext of an envelope.
func decodeSealedContent(pt []byte) (SealedContent, error) {
	var w sealedContentWire
	if err := unmarshalCanonical("sealed envelope", pt, MaxSealedBodySize+sealedContentOverhead, &w); err != nil {
		return SealedContent{}, err
	}
	kind := EnvelopeKind(w.Kind)
	switch {
	case w.Kind > 255 || (kind != EnvelopeMessage && kind != EnvelopeKeyBundle):
		return SealedContent{}, fmt.Errorf("e2ee: sealed envelope: unknown kind %d: %w", w.Kind, ident.ErrMalformed)
	case len(w.Body) == 0 || len(w.Body) > MaxSealedBodySize:
		return SealedContent{}, fmt.Errorf("e2ee: sealed envelope: body of %d bytes: %w", len(w.Body), ident.ErrMalformed)
	}
	sender, err := ident.UserIDFromBytes(w.Sender)
	if err != nil {
		return SealedContent{}, fmt.Errorf("e2ee: sealed envelope: sender: %v: %w", err, ident.ErrMalformed)
	}
	return SealedContent{Kind: kind, Sender: sender, Body: w.Body}, nil
}
