package wire

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// Envelope limits.
const (
	// MaxCiphertextSize bounds the opaque payload of one envelope: an e2ee
	// message of the largest size with room for the sealing around it.
	MaxCiphertextSize = e2ee.MaxMessageSize + 4<<10
	// MaxEnvelopeSize bounds one encoded envelope.
	MaxEnvelopeSize = MaxCiphertextSize + 128
	// EnvelopeIDSize is the size of an envelope ID.
	EnvelopeIDSize = 16
	// DefaultTTL is how long an envelope waits for its device unless the
	// sender asks for less.
	DefaultTTL = 30 * 24 * time.Hour
	// MaxTTL is the longest TTL a relay accepts.
	MaxTTL = DefaultTTL
	// MaxClockSkew is how far in the future of a relay's clock an
	// envelope's Time may be; later envelopes are refused (ErrFromFuture).
	MaxClockSkew = 5 * time.Minute
)

// Errors of envelopes and mailboxes.
var (
	// ErrBadEnvelope reports an envelope that does not decode or breaks a limit.
	ErrBadEnvelope = errors.New("wire: bad envelope")
	// ErrMailboxFull reports a mailbox at its cap; the sender is told.
	ErrMailboxFull = errors.New("wire: mailbox full")
	// ErrExpired reports an envelope whose TTL has passed.
	ErrExpired = errors.New("wire: envelope expired")
	// ErrRequestsFull reports a mailbox whose quota for envelopes without
	// the device's delivery key (message requests) is used up.
	ErrRequestsFull = errors.New("wire: mailbox full for message requests")
	// ErrFromFuture reports an envelope dated more than MaxClockSkew after
	// the clock of the node that checks it.
	ErrFromFuture = errors.New("wire: envelope dated in the future")
)

// EnvelopeID names an envelope: random, chosen by the sender, the key
// relays deduplicate on.
type EnvelopeID [EnvelopeIDSize]byte

// NewEnvelopeID returns a random envelope ID.
func NewEnvelopeID() EnvelopeID {
	var id EnvelopeID
	rand.Read(id[:])
	return id
}

// String returns the ID in hex.
func (id EnvelopeID) String() string { return fmt.Sprintf("%x", id[:]) }

// Envelope is one ciphertext addressed to one device. The sender's identity
// is inside the ciphertext; a relay sees only the recipient device.
type Envelope struct {
	To         ident.DeviceID
	ID         EnvelopeID
	Time       time.Time     // when the sender made it (millisecond precision)
	TTL        time.Duration // how long it may wait (second precision)
	Ciphertext []byte
	// Delivery is the recipient device's delivery key, which only its
	// contacts hold (DeliveryVerifierSize bytes), or nil: relays count an
	// envelope without it against the mailbox's small quota for message
	// requests.
	Delivery []byte
}

// EnvelopeRefSize is the size of an envelope reference: the ID and the
// SHA-256 of the ciphertext.
const EnvelopeRefSize = EnvelopeIDSize + sha256.Size

// EnvelopeRef names one envelope exactly: its ID and the SHA-256 of its
// ciphertext. Relays and devices deduplicate and acknowledge by it, so an
// envelope under a genuine ID with other bytes is another envelope.
type EnvelopeRef struct {
	ID   EnvelopeID
	Hash [sha256.Size]byte
}

// Ref returns the envelope's reference.
func (e Envelope) Ref() EnvelopeRef { return EnvelopeRef{ID: e.ID, Hash: sha256.Sum256(e.Ciphertext)} }

// Bytes returns the reference as sent: the ID then the hash.
func (r EnvelopeRef) Bytes() []byte { return append(r.ID[:len(r.ID):len(r.ID)], r.Hash[:]...) }

// String returns the ID and the start of the hash in hex.
func (r EnvelopeRef) String() string { return fmt.Sprintf("%x/%x", r.ID[:], r.Hash[:4]) }

// ParseEnvelopeRef reads a reference of EnvelopeRefSize bytes.
func ParseEnvelopeRef(b []byte) (EnvelopeRef, error) {
	var r EnvelopeRef
	if len(b) != EnvelopeRefSize {
		return r, fmt.Errorf("wire: envelope reference of %d bytes, want %d", len(b), EnvelopeRefSize)
	}
	copy(r.ID[:], b)
	copy(r.Hash[:], b[EnvelopeIDSize:])
	return r, nil
}

// Expiry is when the envelope stops waiting.
func (e Envelope) Expiry() time.Time { return e.Time.Add(e.TTL) }

// wireEnvelope is the CBOR form: a map with small integer keys.
type wireEnvelope struct {
	To         ident.DeviceID `cbor:"1,keyasint"`
	ID         []byte         `cbor:"2,keyasint"`
	Time       uint64         `cbor:"3,keyasint"` // ms since the Unix epoch
	TTL        uint64         `cbor:"4,keyasint"` // seconds
	Ciphertext []byte         `cbor:"5,keyasint"`
	Delivery   []byte         `cbor:"6,keyasint,omitempty"`
}

var (
	encMode      = mustEncMode()
	decMode      = StrictDecMode(16)
	frameDecMode = StrictDecMode(MaxAckBatch)
)

func mustEncMode() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

// StrictDecMode is how Volo decodes CBOR from the network: duplicate map
// keys, unknown fields, indefinite lengths, tags and invalid UTF-8 are
// refused, nesting is at most 4 levels and maps at most 16 pairs, and no
// array is longer than maxArray. Callers also bound the whole input and
// check that it re-encodes to itself.
func StrictDecMode(maxArray int) cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  maxArray,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// Check reports whether e is within the limits: a device, a non-zero ID,
// a TTL in (0, MaxTTL], a payload of at most MaxCiphertextSize, a
// delivery key of DeliveryVerifierSize bytes or none.
func (e Envelope) Check() error {
	switch {
	case e.To.IsZero():
		return fmt.Errorf("%w: no recipient device", ErrBadEnvelope)
	case e.ID == EnvelopeID{}:
		return fmt.Errorf("%w: zero envelope ID", ErrBadEnvelope)
	case e.TTL <= 0 || e.TTL > MaxTTL:
		return fmt.Errorf("%w: TTL %s not in (0, %s]", ErrBadEnvelope, e.TTL, MaxTTL)
	case len(e.Ciphertext) == 0 || len(e.Ciphertext) > MaxCiphertextSize:
		return fmt.Errorf("%w: ciphertext of %d bytes (1 to %d)", ErrBadEnvelope, len(e.Ciphertext), MaxCiphertextSize)
	case e.Delivery != nil && len(e.Delivery) != DeliveryVerifierSize:
		return fmt.Errorf("%w: delivery key of %d bytes, want %d", ErrBadEnvelope, len(e.Delivery), DeliveryVerifierSize)
	}
	return nil
}

// CheckTime reports whether e may be stored at now: dated at most
// MaxClockSkew after now (else ErrFromFuture) and not expired (else
// ErrExpired).
func (e Envelope) CheckTime(now time.Time) error {
	if e.Time.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("%w: %s is more than %s after %s", ErrFromFuture,
			e.Time.UTC().Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339))
	}
	if !e.Expiry().After(now) {
		return ErrExpired
	}
	return nil
}

// Encode returns the envelope's canonical CBOR encoding.
func (e Envelope) Encode() ([]byte, error) {
	if err := e.Check(); err != nil {
		return nil, err
	}
	return encMode.Marshal(wireEnvelope{
		To:         e.To,
		ID:         e.ID[:],
		Time:       uint64(e.Time.UnixMilli()),
		TTL:        uint64(e.TTL / time.Second),
		Ciphertext: e.Ciphertext,
		Delivery:   e.Delivery,
	})
}

// DecodeEnvelope decodes and checks an envelope. Only the canonical
// encoding is accepted.
func DecodeEnvelope(b []byte) (Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return Envelope{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadEnvelope, len(b), MaxEnvelopeSize)
	}
	var w wireEnvelope
	if err := decMode.Unmarshal(b, &w); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if len(w.ID) != EnvelopeIDSize {
		return Envelope{}, fmt.Errorf("%w: envelope ID of %d bytes", ErrBadEnvelope, len(w.ID))
	}
	if w.Time > 1<<53 || w.TTL > uint64(MaxTTL/time.Second) {
		return Envelope{}, fmt.Errorf("%w: time or TTL out of range", ErrBadEnvelope)
	}
	e := Envelope{
		To:         w.To,
		Time:       time.UnixMilli(int64(w.Time)).UTC(),
		TTL:        time.Duration(w.TTL) * time.Second,
		Ciphertext: w.Ciphertext,
		Delivery:   w.Delivery,
	}
	copy(e.ID[:], w.ID)
	if err := e.Check(); err != nil {
		return Envelope{}, err
	}
	if again, _ := e.Encode(); !bytes.Equal(again, b) {
		return Envelope{}, fmt.Errorf("%w: not canonical CBOR", ErrBadEnvelope)
	}
	return e, nil
}
