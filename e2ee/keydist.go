package e2ee

import (
	"bytes"
	"crypto/hpke"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/volo-chat/volo/ident"
)

// Key distribution (docs/protocol.md, "Key distribution").
const (
	// MaxKeyBundleRecipients bounds the recipient devices of one bundle;
	// the target is 3000 devices per conversation.
	MaxKeyBundleRecipients = 4096
	// hpkeEncSize is the size of an MLKEM768X25519 encapsulated key
	// (ML-KEM-768 ciphertext 1088 || X25519 share 32).
	hpkeEncSize = 1088 + 32
	// sessionPayloadSize is the sealed plaintext: session ID || session key.
	sessionPayloadSize = SessionIDSize + SessionKeySize
	// SealedSessionKeySize is the size of one recipient's sealed session
	// key: enc || AES-256-GCM(session ID || session key).
	SealedSessionKeySize = hpkeEncSize + sessionPayloadSize + 16
	// MaxKeyBundleSize bounds an encoded key bundle.
	MaxKeyBundleSize = MaxKeyBundleRecipients*(1+2+ident.IDSize+3+SealedSessionKeySize) + 512
	keyBundleVersion = 1
)

// Errors of key distribution.
var (
	// ErrNotRecipient reports a device that has no entry in a key bundle.
	ErrNotRecipient = errors.New("e2ee: device is not a recipient")
	// ErrUnknownSender reports a sender device that is not in the sender's
	// verified device set (and was never in it).
	ErrUnknownSender = errors.New("e2ee: sender device not in the sender's device set")
	// ErrKeyBundleOpen reports a sealed session key that HPKE cannot open
	// with the recipient's messaging key.
	ErrKeyBundleOpen = errors.New("e2ee: sealed session key does not open")
	// ErrSessionStarted reports a key bundle asked for a session that has
	// already encrypted messages: its session key is erased.
	ErrSessionStarted = errors.New("e2ee: session already started")
	// ErrParticipantsChanged reports participants whose devices differ from
	// those the session was made for: make a new session.
	ErrParticipantsChanged = errors.New("e2ee: participants changed since the session was made")
	// ErrTooManyRecipients reports more than MaxKeyBundleRecipients devices.
	ErrTooManyRecipients = errors.New("e2ee: too many recipients")
)

// KeyBundleEntry is one recipient device's sealed session key.
type KeyBundleEntry struct {
	Recipient ident.DeviceID
	Sealed    []byte // HPKE enc || ciphertext, SealedSessionKeySize bytes
}

// KeyBundle distributes a sender session: its key sealed with HPKE to every
// device of every participant and to the sender's own other devices,
// signed by the sender device (DomainKeyDist).
type KeyBundle struct {
	Conversation ConversationID
	Session      SessionID
	SenderUser   ident.UserID
	Sender       ident.DeviceID
	Created      time.Time        // the session's creation time, millisecond precision
	Entries      []KeyBundleEntry // sorted by recipient device ID, no repeats
	Sig          []byte
}

type keyBundleEntryWire struct {
	_         struct{} `cbor:",toarray"`
	Recipient []byte
	Sealed    []byte
}

type keyBundleWire struct {
	Version      uint8                `cbor:"1,keyasint"`
	Conversation []byte               `cbor:"2,keyasint"`
	Session      []byte               `cbor:"3,keyasint"`
	SenderUser   []byte               `cbor:"4,keyasint"`
	Sender       []byte               `cbor:"5,keyasint"`
	Created      int64                `cbor:"6,keyasint"`
	Entries      []keyBundleEntryWire `cbor:"7,keyasint"`
	Sig          []byte               `cbor:"8,keyasint,omitempty"`
}

func (b *KeyBundle) wire(withSig bool) keyBundleWire {
	w := keyBundleWire{
		Version:      keyBundleVersion,
		Conversation: b.Conversation[:],
		Session:      b.Session[:],
		SenderUser:   idBytes(!b.SenderUser.IsZero(), b.SenderUser.Bytes),
		Sender:       idBytes(!b.Sender.IsZero(), b.Sender.Bytes),
		Created:      b.Created.UnixMilli(),
		Entries:      make([]keyBundleEntryWire, len(b.Entries)),
	}
	for i, e := range b.Entries {
		w.Entries[i] = keyBundleEntryWire{Recipient: idBytes(!e.Recipient.IsZero(), e.Recipient.Bytes), Sealed: e.Sealed}
	}
	if withSig {
		w.Sig = b.Sig
	}
	return w
}

// Encode returns the canonical CBOR encoding of the bundle.
func (b *KeyBundle) Encode() []byte { return marshalCBOR(b.wire(true)) }

// signedBytes is what the sender signs: the encoding without Sig.
func (b *KeyBundle) signedBytes() []byte { return marshalCBOR(b.wire(false)) }

// keyDistInfo is the HPKE info of one sealed session key:
//
//	"volo/v1/keydist" || 0x00 || conversation ID (16) || session ID (16) ||
//	sender device ID (36) || recipient device ID (36)
func keyDistInfo(conv ConversationID, session SessionID, sender, recipient ident.DeviceID) []byte {
	info := make([]byte, 0, len(ident.DomainKeyDist)+1+ConversationIDSize+SessionIDSize+2*ident.IDSize)
	info = append(info, ident.DomainKeyDist...)
	info = append(info, 0)
	info = append(info, conv[:]...)
	info = append(info, session[:]...)
	info = append(info, sender.Bytes()...)
	return append(info, recipient.Bytes()...)
}

// RecipientDevices returns the devices a session of sender must be sealed
// to: every active device of every participant set, the sender's own other
// devices included and the sender device itself excluded, sorted by device
// ID without repeats.
func RecipientDevices(sender ident.DeviceID, participants []ident.DeviceSet) []ident.DevicePublic {
	recs := recipients(sender, participants)
	out := make([]ident.DevicePublic, len(recs))
	for i, r := range recs {
		out[i] = r.pub
	}
	return out
}

type recipient struct {
	id  ident.DeviceID
	pub ident.DevicePublic
}

func recipients(sender ident.DeviceID, participants []ident.DeviceSet) []recipient {
	var n int
	for _, s := range participants {
		n += s.Len()
	}
	recs := make([]recipient, 0, n)
	for _, s := range participants {
		for _, d := range s.Devices() {
			if id := d.ID(); !id.Equal(sender) {
				recs = append(recs, recipient{id, d})
			}
		}
	}
	slices.SortFunc(recs, func(a, b recipient) int { return a.id.Compare(b.id) })
	return slices.CompactFunc(recs, func(a, b recipient) bool { return a.id.Equal(b.id) })
}

// NewKeyBundle seals s's session key to every recipient device of
// participants (see RecipientDevices) and signs the bundle with sender,
// the session's sender device. It must be called before s encrypts its
// first message (ErrSessionStarted), with the participants s was made for
// (ErrParticipantsChanged); the sender's own device set must be among
// them. HPKE draws its randomness from crypto/rand.
func NewKeyBundle(s *SenderSession, sender DeviceKeys, participants []ident.DeviceSet) (KeyBundle, error) {
	if s.next != 0 {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle for session %s after %d messages: %w", s.id, s.next, ErrSessionStarted)
	}
	if sender.Signing.IsZero() || !sender.Signing.Public().Equal(s.signing) {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle: keys are not the session's sender device %s: %w", s.sender, ident.ErrBadKey)
	}
	if FingerprintParticipants(participants) != s.participants {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle for session %s: %w", s.id, ErrParticipantsChanged)
	}
	own := slices.IndexFunc(participants, func(d ident.DeviceSet) bool { return d.User().Equal(s.senderUser) })
	if own < 0 {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle: the sender's own device set is not among the participants: %w", ErrUnknownSender)
	}
	if _, ok := participants[own].Lookup(s.sender); !ok {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle: sender device %s not in its user's device set: %w", s.sender, ErrUnknownSender)
	}
	recs := recipients(s.sender, participants)
	if len(recs) > MaxKeyBundleRecipients {
		return KeyBundle{}, fmt.Errorf("e2ee: key bundle: %d recipient devices, limit %d: %w", len(recs), MaxKeyBundleRecipients, ErrTooManyRecipients)
	}
	b := KeyBundle{
		Conversation: s.conversation,
		Session:      s.id,
		SenderUser:   s.senderUser,
		Sender:       s.sender,
		Created:      s.created,
		Entries:      make([]KeyBundleEntry, len(recs)),
	}
	payload := make([]byte, 0, sessionPayloadSize)
	payload = append(append(payload, s.id[:]...), s.chainKey[:]...)
	defer clear(payload)
	for i, r := range recs {
		id := r.id
		sealed, err := hpke.Seal(r.pub.Messaging.HPKE(), hpke.HKDFSHA256(), hpke.AES256GCM(), keyDistInfo(s.conversation, s.id, s.sender, id), payload)
		if err != nil {
			return KeyBundle{}, fmt.Errorf("e2ee: key bundle: seal to %s: %w", id, err)
		}
		b.Entries[i] = KeyBundleEntry{Recipient: id, Sealed: sealed}
	}
	b.Sig = sender.Signing.Sign(ident.DomainKeyDist, b.signedBytes())
	return b, nil
}

// DecodeKeyBundle decodes a bundle and checks its shape: sizes, entries
// sorted by recipient without repeats, canonical encoding. The signature
// is checked by OpenKeyBundle.
func DecodeKeyBundle(data []byte) (KeyBundle, error) {
	var w keyBundleWire
	if err := unmarshalCanonical("key bundle", data, MaxKeyBundleSize, &w); err != nil {
		return KeyBundle{}, err
	}
	bad := func(format string, a ...any) (KeyBundle, error) {
		return KeyBundle{}, fmt.Errorf("e2ee: decode key bundle: "+format+": %w", append(a, ident.ErrMalformed)...)
	}
	if w.Version != keyBundleVersion {
		return bad("unsupported version %d", w.Version)
	}
	var b KeyBundle
	if !copyExact(b.Conversation[:], w.Conversation) || !copyExact(b.Session[:], w.Session) {
		return bad("conversation or session ID size")
	}
	var err error
	if b.SenderUser, err = ident.UserIDFromBytes(w.SenderUser); err != nil {
		return bad("sender user: %v", err)
	}
	if b.Sender, err = ident.DeviceIDFromBytes(w.Sender); err != nil {
		return bad("sender device: %v", err)
	}
	if w.Created < 0 {
		return bad("negative time")
	}
	b.Created = time.UnixMilli(w.Created).UTC()
	if len(w.Entries) == 0 || len(w.Entries) > MaxKeyBundleRecipients {
		return bad("%d entries, want 1 to %d", len(w.Entries), MaxKeyBundleRecipients)
	}
	b.Entries = make([]KeyBundleEntry, len(w.Entries))
	for i, e := range w.Entries {
		if b.Entries[i].Recipient, err = ident.DeviceIDFromBytes(e.Recipient); err != nil {
			return bad("entry %d: %v", i, err)
		}
		if i > 0 && bytes.Compare(w.Entries[i-1].Recipient, e.Recipient) >= 0 {
			return bad("entry %d: recipients not sorted or repeated", i)
		}
		if len(e.Sealed) != SealedSessionKeySize {
			return bad("entry %d: sealed key of %d bytes, want %d", i, len(e.Sealed), SealedSessionKeySize)
		}
		b.Entries[i].Sealed = e.Sealed
	}
	if len(w.Sig) != ident.SignatureSize {
		return bad("signature of %d bytes", len(w.Sig))
	}
	b.Sig = w.Sig
	return b, nil
}

// Entry returns the entry of recipient, if any.
func (b *KeyBundle) Entry(recipient ident.DeviceID) (KeyBundleEntry, bool) {
	i, ok := slices.BinarySearchFunc(b.Entries, recipient, func(e KeyBundleEntry, id ident.DeviceID) int { return e.Recipient.Compare(id) })
	if !ok {
		return KeyBundleEntry{}, false
	}
	return b.Entries[i], true
}

// OpenKeyBundle checks b against the sender's verified device set and
// opens the entry of recipient. In order: the sender device must be in
// senderSet (ErrRevokedDevice if it was revoked, ErrUnknownSender if it
// was never there or senderSet is another user's), the signature must
// verify (ErrBadSignature), recipient must have an entry (ErrNotRecipient)
// and the entry must open (ErrKeyBundleOpen). It returns the receiver
// state of the session at counter 0.
func OpenKeyBundle(b KeyBundle, senderSet ident.DeviceSet, recipient DeviceKeys) (*ReceiverSession, error) {
	if !senderSet.User().Equal(b.SenderUser) {
		return nil, fmt.Errorf("e2ee: open key bundle: sender user %s, device set of %s: %w", b.SenderUser, senderSet.User(), ErrUnknownSender)
	}
	if senderSet.Revoked(b.Sender) {
		return nil, fmt.Errorf("e2ee: open key bundle: sender device %s: %w", b.Sender, ident.ErrRevokedDevice)
	}
	dev, ok := senderSet.Lookup(b.Sender)
	if !ok {
		return nil, fmt.Errorf("e2ee: open key bundle: sender device %s: %w", b.Sender, ErrUnknownSender)
	}
	if err := dev.Signing.Verify(ident.DomainKeyDist, b.signedBytes(), b.Sig); err != nil {
		return nil, fmt.Errorf("e2ee: open key bundle of session %s: %w", b.Session, err)
	}
	id := recipient.ID()
	e, ok := b.Entry(id)
	if !ok {
		return nil, fmt.Errorf("e2ee: open key bundle of session %s: device %s: %w", b.Session, id, ErrNotRecipient)
	}
	payload, err := hpke.Open(recipient.Messaging.HPKE(), hpke.HKDFSHA256(), hpke.AES256GCM(), keyDistInfo(b.Conversation, b.Session, b.Sender, id), e.Sealed)
	if err != nil {
		return nil, fmt.Errorf("e2ee: open key bundle of session %s for %s: %w", b.Session, id, ErrKeyBundleOpen)
	}
	defer clear(payload)
	if len(payload) != sessionPayloadSize || !bytes.Equal(payload[:SessionIDSize], b.Session[:]) {
		return nil, fmt.Errorf("e2ee: open key bundle of session %s: sealed payload names another session: %w", b.Session, ident.ErrMalformed)
	}
	r := &ReceiverSession{
		id:           b.Session,
		conversation: b.Conversation,
		senderUser:   b.SenderUser,
		sender:       b.Sender,
		signing:      dev.Signing,
		created:      b.Created,
	}
	copy(r.chainKey[:], payload[SessionIDSize:])
	return r, nil
}
