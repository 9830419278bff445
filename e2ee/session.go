package e2ee

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/volo-chat/volo/ident"
)

// Sender sessions and messages (docs/protocol.md, "Messages" and "Renewal").
const (
	// SessionKeySize is the size of a sender session's key (chain key 0).
	SessionKeySize = 32
	// SessionIDSize is the size of a random session ID.
	SessionIDSize = 16
	// ConversationIDSize is the size of a conversation (or group) ID.
	ConversationIDSize = 16

	// MaxSkippedMessageKeys is the receive window: a receiver accepts a
	// message at most this many counters behind the highest one it has
	// seen (keeping a key for each one it has not received yet), and at
	// most MaxSkippedMessageKeys-1 counters ahead of the next one expected.
	MaxSkippedMessageKeys = 1000
	// MaxMessagePlaintextSize bounds the plaintext of one message.
	MaxMessagePlaintextSize = 256 << 10
	// MaxMessageSize bounds one encoded message.
	MaxMessageSize = MaxMessagePlaintextSize + 512
	// maxMessageHeaderSize bounds an encoded message header.
	maxMessageHeaderSize = 256
	// MaxReceiverStateSize bounds an encoded receiver state (with a full window).
	MaxReceiverStateSize = 64 << 10
	// maxSenderSessionSize bounds an encoded sender session.
	maxSenderSessionSize = 512

	messageVersion = 1
	// messageKeySize is an AES-256 key followed by a 96-bit GCM nonce.
	messageKeySize = 32 + 12

	// HKDF-SHA-256 info labels of the message KDF chain.
	chainKeyLabel   = "volo/v1/msg chain key"
	messageKeyLabel = "volo/v1/msg message key"
	// participantsLabel prefixes the participants fingerprint input.
	participantsLabel = "volo/v1/participants"
	// directConversationLabel prefixes the 1:1 conversation ID input.
	directConversationLabel = "volo/v1/direct"
)

// Errors of sessions and messages.
var (
	// ErrReplay reports a message whose counter was already received.
	ErrReplay = errors.New("e2ee: replayed message")
	// ErrUnknownSession reports a message for a session the receiver does not hold.
	ErrUnknownSession = errors.New("e2ee: unknown session")
	// ErrOutsideWindow reports a message too far ahead of the receiver or
	// older than its window of skipped message keys.
	ErrOutsideWindow = errors.New("e2ee: message outside the receive window")
	// ErrSessionExhausted reports a sender session whose counter is used up.
	ErrSessionExhausted = errors.New("e2ee: session exhausted")
	// ErrMessageTooLarge reports a plaintext over MaxMessagePlaintextSize.
	ErrMessageTooLarge = errors.New("e2ee: message too large")
)

// ParticipantsFingerprint identifies the set of devices of a conversation's
// participants. A session is renewed when it changes.
type ParticipantsFingerprint [sha256.Size]byte

// FingerprintParticipants returns the fingerprint of the active devices of
// every participant: SHA-256 over "volo/v1/participants" || 0x00, then, per
// user in user ID order, the user ID (36 bytes), the number of devices
// (uint32 big-endian) and the sorted device IDs (36 bytes each). The order
// of sets does not matter; a user given twice counts once.
func FingerprintParticipants(sets []ident.DeviceSet) ParticipantsFingerprint {
	sorted := sortedSets(sets)
	h := sha256.New()
	h.Write([]byte(participantsLabel))
	h.Write([]byte{0})
	for _, s := range sorted {
		h.Write(s.User().Bytes())
		ids := s.DeviceIDs()
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ids))))
		for _, id := range ids {
			h.Write(id.Bytes())
		}
	}
	var fp ParticipantsFingerprint
	copy(fp[:], h.Sum(nil))
	return fp
}

// sortedSets returns sets sorted by user ID without repeated users.
func sortedSets(sets []ident.DeviceSet) []ident.DeviceSet {
	s := slices.Clone(sets)
	slices.SortFunc(s, func(a, b ident.DeviceSet) int { return a.User().Compare(b.User()) })
	return slices.CompactFunc(s, func(a, b ident.DeviceSet) bool { return a.User().Equal(b.User()) })
}

// chainStep derives message key n from chain key n and overwrites the chain
// key with chain key n+1:
//
//	mk_n     = HKDF-Expand(ck_n, "volo/v1/msg message key", 44)
//	ck_{n+1} = HKDF-Expand(ck_n, "volo/v1/msg chain key", 32)
//
// ck_0 is the session key (uniformly random, used directly as the PRK).
func chainStep(ck *[SessionKeySize]byte) (mk [messageKeySize]byte) {
	m, err := hkdf.Expand(sha256.New, ck[:], messageKeyLabel, messageKeySize)
	if err != nil {
		panic(err)
	}
	c, err := hkdf.Expand(sha256.New, ck[:], chainKeyLabel, SessionKeySize)
	if err != nil {
		panic(err)
	}
	copy(mk[:], m)
	copy(ck[:], c)
	clear(m)
	clear(c)
	return mk
}

// messageAEAD returns AES-256-GCM keyed with the first 32 bytes of mk; the
// nonce is the last 12.
func messageAEAD(mk *[messageKeySize]byte) cipher.AEAD {
	block, err := aes.NewCipher(mk[:32])
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// SenderSession is the sending side of a session, owned by one sender
// device for one conversation: a random session key and ID, the current
// chain key and the next counter. Each Encrypt advances the chain and
// overwrites the previous chain key. A SenderSession is not safe for
// concurrent use.
type SenderSession struct {
	id           SessionID
	conversation ConversationID
	senderUser   ident.UserID
	sender       ident.DeviceID
	signing      ident.SigningPublic
	created      time.Time
	participants ParticipantsFingerprint
	chainKey     [SessionKeySize]byte
	next         uint32
}

// NewSenderSession starts a session for sender (the device's keys, of
// user senderUser) in conversation conv, whose participants are the users
// of participants (the sender's own user included). It draws the session
// key and ID from rand (crypto/rand if nil). Distribute it with
// NewKeyBundle before the first Encrypt.
func NewSenderSession(sender DeviceKeys, senderUser ident.UserID, conv ConversationID, participants []ident.DeviceSet, now time.Time, rand io.Reader) (*SenderSession, error) {
	if sender.Signing.IsZero() || sender.Messaging.IsZero() {
		return nil, fmt.Errorf("e2ee: new sender session: empty device keys: %w", ident.ErrBadKey)
	}
	if senderUser.IsZero() || conv.IsZero() {
		return nil, fmt.Errorf("e2ee: new sender session: zero user or conversation ID: %w", ident.ErrBadID)
	}
	s := &SenderSession{
		conversation: conv,
		senderUser:   senderUser,
		sender:       sender.ID(),
		signing:      sender.Signing.Public(),
		created:      linkTime(now),
		participants: FingerprintParticipants(participants),
	}
	r := randOrDefault(rand)
	if _, err := io.ReadFull(r, s.chainKey[:]); err != nil {
		return nil, fmt.Errorf("e2ee: new sender session key: %w", err)
	}
	if _, err := io.ReadFull(r, s.id[:]); err != nil {
		return nil, fmt.Errorf("e2ee: new sender session ID: %w", err)
	}
	return s, nil
}

// ID returns the session ID.
func (s *SenderSession) ID() SessionID { return s.id }

// Conversation returns the conversation the session belongs to.
func (s *SenderSession) Conversation() ConversationID { return s.conversation }

// Sender returns the sender device.
func (s *SenderSession) Sender() ident.DeviceID { return s.sender }

// Created returns the creation time (millisecond precision).
func (s *SenderSession) Created() time.Time { return s.created }

// Sent returns the number of messages encrypted so far (the next counter).
func (s *SenderSession) Sent() uint32 { return s.next }

// Participants returns the participants fingerprint the session was made for.
func (s *SenderSession) Participants() ParticipantsFingerprint { return s.participants }

// String names the session; it never prints the key.
func (s *SenderSession) String() string {
	return fmt.Sprintf("SenderSession(%s, sent %d)", s.id, s.next)
}

// Encrypt encrypts and signs plaintext as the next message of the session.
// key must be the signing key of the session's sender device.
func (s *SenderSession) Encrypt(key SigningKey, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxMessagePlaintextSize {
		return nil, fmt.Errorf("e2ee: encrypt %d bytes, limit %d: %w", len(plaintext), MaxMessagePlaintextSize, ErrMessageTooLarge)
	}
	if key.IsZero() || !key.Public().Equal(s.signing) {
		return nil, fmt.Errorf("e2ee: encrypt: signing key is not the session's sender device %s: %w", s.sender, ident.ErrBadKey)
	}
	if s.next == math.MaxUint32 {
		return nil, fmt.Errorf("e2ee: encrypt: session %s: %w", s.id, ErrSessionExhausted)
	}
	m := Message{Header: MessageHeader{
		Conversation: s.conversation,
		Session:      s.id,
		SenderUser:   s.senderUser,
		Sender:       s.sender,
		Counter:      s.next,
	}}
	mk := chainStep(&s.chainKey)
	s.next++
	aead := messageAEAD(&mk)
	m.Ciphertext = aead.Seal(make([]byte, 0, len(plaintext)+aead.Overhead()), mk[32:], plaintext, m.headerBytes())
	clear(mk[:])
	m.Sig = key.Sign(ident.DomainMsg, m.signedBytes())
	return m.Encode(), nil
}

// skippedKey is the message key of a counter not received yet.
type skippedKey struct {
	n   uint32
	key [messageKeySize]byte
}

// ReceiverSession is the receiving side of one (sender device, session):
// the sender's verified signing key, the current chain key, the next
// counter expected and the keys of skipped counters within the window.
// Make one with OpenKeyBundle. It is not safe for concurrent use.
type ReceiverSession struct {
	id           SessionID
	conversation ConversationID
	senderUser   ident.UserID
	sender       ident.DeviceID
	signing      ident.SigningPublic
	created      time.Time
	chainKey     [SessionKeySize]byte
	next         uint32
	skipped      []skippedKey // sorted by n; every n in [next-MaxSkippedMessageKeys, next)
}

// ID returns the session ID.
func (r *ReceiverSession) ID() SessionID { return r.id }

// Conversation returns the conversation of the session.
func (r *ReceiverSession) Conversation() ConversationID { return r.conversation }

// Sender returns the sender device.
func (r *ReceiverSession) Sender() ident.DeviceID { return r.sender }

// SenderUser returns the sender's user.
func (r *ReceiverSession) SenderUser() ident.UserID { return r.senderUser }

// Created returns the session's creation time, as the sender stated it.
func (r *ReceiverSession) Created() time.Time { return r.created }

// String names the session; it never prints keys.
func (r *ReceiverSession) String() string {
	return fmt.Sprintf("ReceiverSession(%s from %s, next %d, %d skipped)", r.id, r.sender, r.next, len(r.skipped))
}

func (r *ReceiverSession) findSkipped(n uint32) (int, bool) {
	return slices.BinarySearchFunc(r.skipped, n, func(k skippedKey, n uint32) int {
		switch {
		case k.n < n:
			return -1
		case k.n > n:
			return 1
		}
		return 0
	})
}

// Decrypt checks and decrypts m. In order it checks that m belongs to this
// session (ErrUnknownSession), the sender's signature (ErrBadSignature: any
// changed byte of the message), the counter (ErrReplay, ErrOutsideWindow)
// and the AEAD (ErrTampered). The state changes only if all pass.
func (r *ReceiverSession) Decrypt(m Message) ([]byte, error) {
	h := m.Header
	if h.Session != r.id || !h.Sender.Equal(r.sender) || h.Conversation != r.conversation || !h.SenderUser.Equal(r.senderUser) {
		return nil, fmt.Errorf("e2ee: decrypt: message of session %s from %s, this is %s from %s: %w", h.Session, h.Sender, r.id, r.sender, ErrUnknownSession)
	}
	if err := r.signing.Verify(ident.DomainMsg, m.signedBytes(), m.Sig); err != nil {
		return nil, fmt.Errorf("e2ee: decrypt message %d of session %s: %w", h.Counter, r.id, err)
	}
	n := h.Counter
	var (
		mk       [messageKeySize]byte
		ck       = r.chainKey
		newSkips []skippedKey
		at       = -1
	)
	defer func() {
		clear(mk[:])
		clear(ck[:])
		clear(newSkips)
	}()
	if n < r.next {
		i, ok := r.findSkipped(n)
		if !ok {
			if r.next-n > MaxSkippedMessageKeys {
				return nil, fmt.Errorf("e2ee: decrypt: message %d is older than the window (next %d): %w", n, r.next, ErrOutsideWindow)
			}
			return nil, fmt.Errorf("e2ee: decrypt: message %d of session %s: %w", n, r.id, ErrReplay)
		}
		mk, at = r.skipped[i].key, i
	} else {
		if n-r.next >= MaxSkippedMessageKeys {
			return nil, fmt.Errorf("e2ee: decrypt: message %d is too far ahead (next %d): %w", n, r.next, ErrOutsideWindow)
		}
		if n > r.next {
			newSkips = make([]skippedKey, 0, n-r.next)
		}
		for i := r.next; i < n; i++ {
			newSkips = append(newSkips, skippedKey{n: i, key: chainStep(&ck)})
		}
		mk = chainStep(&ck)
	}
	aead := messageAEAD(&mk)
	pt, err := aead.Open(nil, mk[32:], m.Ciphertext, m.headerBytes())
	if err != nil {
		return nil, fmt.Errorf("e2ee: decrypt message %d of session %s: %w", n, r.id, ErrTampered)
	}
	// Commit.
	if at >= 0 {
		clear(r.skipped[at].key[:])
		r.skipped = slices.Delete(r.skipped, at, at+1)
		return pt, nil
	}
	r.chainKey, r.next = ck, n+1
	r.skipped = append(r.skipped, newSkips...)
	newSkips = nil
	if r.next > MaxSkippedMessageKeys {
		floor := r.next - MaxSkippedMessageKeys
		drop := 0
		for drop < len(r.skipped) && r.skipped[drop].n < floor {
			clear(r.skipped[drop].key[:])
			drop++
		}
		r.skipped = slices.Delete(r.skipped, 0, drop)
	}
	return pt, nil
}

// receiverSessionKey indexes receiver sessions.
type receiverSessionKey struct {
	sender ident.DeviceID
	id     SessionID
}

// ReceiverSessions holds a device's receiver sessions, one per (sender
// device, session). The zero value is empty and ready to use.
type ReceiverSessions struct {
	m map[receiverSessionKey]*ReceiverSession
}

// Add stores r and reports whether it did. If a state for the same sender
// device and session is held already, it is kept and Add returns false: a
// key bundle delivered again must not rewind a session to counter 0, which
// would let its old messages be replayed.
func (rs *ReceiverSessions) Add(r *ReceiverSession) bool {
	k := receiverSessionKey{r.sender, r.id}
	if _, ok := rs.m[k]; ok {
		return false
	}
	if rs.m == nil {
		rs.m = make(map[receiverSessionKey]*ReceiverSession)
	}
	rs.m[k] = r
	return true
}

// Lookup returns the session of sender with the given ID.
func (rs *ReceiverSessions) Lookup(sender ident.DeviceID, id SessionID) (*ReceiverSession, bool) {
	r, ok := rs.m[receiverSessionKey{sender, id}]
	return r, ok
}

// Remove forgets one session.
func (rs *ReceiverSessions) Remove(sender ident.DeviceID, id SessionID) {
	delete(rs.m, receiverSessionKey{sender, id})
}

// RemoveSender forgets every session of a sender device (for example once
// it is revoked) and returns how many there were.
func (rs *ReceiverSessions) RemoveSender(sender ident.DeviceID) int {
	n := 0
	for k := range rs.m {
		if k.sender.Equal(sender) {
			delete(rs.m, k)
			n++
		}
	}
	return n
}

// Len returns the number of sessions held.
func (rs *ReceiverSessions) Len() int { return len(rs.m) }

// Decrypt decodes data, finds its session and decrypts it (see
// ReceiverSession.Decrypt). ErrUnknownSession if no session matches.
func (rs *ReceiverSessions) Decrypt(data []byte) (Message, []byte, error) {
	m, err := DecodeMessage(data)
	if err != nil {
		return Message{}, nil, err
	}
	r, ok := rs.Lookup(m.Header.Sender, m.Header.Session)
	if !ok {
		return m, nil, fmt.Errorf("e2ee: decrypt: session %s from %s: %w", m.Header.Session, m.Header.Sender, ErrUnknownSession)
	}
	pt, err := r.Decrypt(m)
	return m, pt, err
}

// RenewalPolicy says when a sender must replace its session.
type RenewalPolicy struct {
	MaxMessages uint32        // renew once this many messages were sent
	MaxAge      time.Duration // renew once the session is this old
}

// DefaultRenewalPolicy renews after 100 messages or 7 days.
func DefaultRenewalPolicy() RenewalPolicy {
	return RenewalPolicy{MaxMessages: 100, MaxAge: 7 * 24 * time.Hour}
}

// NeedsRenewal reports whether s must be replaced by a new session before
// the next message: after MaxMessages messages, once MaxAge has passed
// since its creation, or when the participants' devices (participants, see
// FingerprintParticipants) differ from those it was made for. A zero
// MaxMessages or MaxAge disables that limit.
func (p RenewalPolicy) NeedsRenewal(s *SenderSession, now time.Time, participants ParticipantsFingerprint) bool {
	switch {
	case s == nil:
		return true
	case participants != s.participants:
		return true
	case p.MaxMessages > 0 && s.next >= p.MaxMessages:
		return true
	case p.MaxAge > 0 && !now.Before(s.created.Add(p.MaxAge)):
		return true
	}
	return s.next == math.MaxUint32
}

// Persistent forms. Both carry live key material: the client stores them
// only inside its encrypted local store.

type senderSessionWire struct {
	Version      uint8  `cbor:"1,keyasint"`
	Session      []byte `cbor:"2,keyasint"`
	Conversation []byte `cbor:"3,keyasint"`
	SenderUser   []byte `cbor:"4,keyasint"`
	Sender       []byte `cbor:"5,keyasint"`
	Signing      []byte `cbor:"6,keyasint"`
	Created      int64  `cbor:"7,keyasint"`
	Participants []byte `cbor:"8,keyasint"`
	ChainKey     []byte `cbor:"9,keyasint"`
	Next         uint32 `cbor:"10,keyasint"`
}

// MarshalBinary encodes the session's current state. It holds the current
// chain key, never an earlier one.
func (s *SenderSession) MarshalBinary() ([]byte, error) {
	return marshalCBOR(senderSessionWire{
		Version:      messageVersion,
		Session:      s.id[:],
		Conversation: s.conversation[:],
		SenderUser:   s.senderUser.Bytes(),
		Sender:       s.sender.Bytes(),
		Signing:      s.signing.Bytes(),
		Created:      s.created.UnixMilli(),
		Participants: s.participants[:],
		ChainKey:     s.chainKey[:],
		Next:         s.next,
	}), nil
}

// UnmarshalSenderSession decodes the form written by MarshalBinary.
func UnmarshalSenderSession(data []byte) (*SenderSession, error) {
	var w senderSessionWire
	if err := unmarshalCanonical("sender session", data, maxSenderSessionSize, &w); err != nil {
		return nil, err
	}
	bad := func(what string) (*SenderSession, error) {
		return nil, fmt.Errorf("e2ee: decode sender session: %s: %w", what, ident.ErrMalformed)
	}
	if w.Version != messageVersion {
		return bad("version")
	}
	s := &SenderSession{next: w.Next, created: time.UnixMilli(w.Created).UTC()}
	if !copyExact(s.id[:], w.Session) || !copyExact(s.conversation[:], w.Conversation) ||
		!copyExact(s.participants[:], w.Participants) || !copyExact(s.chainKey[:], w.ChainKey) {
		return bad("field size")
	}
	var err error
	if s.senderUser, err = ident.UserIDFromBytes(w.SenderUser); err != nil {
		return bad("sender user")
	}
	if s.sender, err = ident.DeviceIDFromBytes(w.Sender); err != nil {
		return bad("sender device")
	}
	if s.signing, err = ident.ParseSigningPublic(w.Signing); err != nil {
		return bad("signing key")
	}
	return s, nil
}

type skippedWire struct {
	_   struct{} `cbor:",toarray"`
	N   uint32
	Key []byte
}

type receiverSessionWire struct {
	Version      uint8         `cbor:"1,keyasint"`
	Session      []byte        `cbor:"2,keyasint"`
	Conversation []byte        `cbor:"3,keyasint"`
	SenderUser   []byte        `cbor:"4,keyasint"`
	Sender       []byte        `cbor:"5,keyasint"`
	Signing      []byte        `cbor:"6,keyasint"`
	Created      int64         `cbor:"7,keyasint"`
	ChainKey     []byte        `cbor:"8,keyasint"`
	Next         uint32        `cbor:"9,keyasint"`
	Skipped      []skippedWire `cbor:"10,keyasint"`
}

// MarshalBinary encodes the receiver state: the current chain key, the
// next counter and the keys of skipped counters inside the window. It holds
// no key of a message already received, nor any earlier chain key, so the
// state of a stolen device cannot decrypt earlier messages.
func (r *ReceiverSession) MarshalBinary() ([]byte, error) {
	w := receiverSessionWire{
		Version:      messageVersion,
		Session:      r.id[:],
		Conversation: r.conversation[:],
		SenderUser:   r.senderUser.Bytes(),
		Sender:       r.sender.Bytes(),
		Signing:      r.signing.Bytes(),
		Created:      r.created.UnixMilli(),
		ChainKey:     r.chainKey[:],
		Next:         r.next,
		Skipped:      make([]skippedWire, len(r.skipped)),
	}
	for i := range r.skipped {
		w.Skipped[i] = skippedWire{N: r.skipped[i].n, Key: r.skipped[i].key[:]}
	}
	return marshalCBOR(w), nil
}

// UnmarshalReceiverSession decodes the form written by MarshalBinary and
// checks its invariants (sizes, skipped counters sorted and inside the window).
func UnmarshalReceiverSession(data []byte) (*ReceiverSession, error) {
	var w receiverSessionWire
	if err := unmarshalCanonical("receiver session", data, MaxReceiverStateSize, &w); err != nil {
		return nil, err
	}
	bad := func(what string) (*ReceiverSession, error) {
		return nil, fmt.Errorf("e2ee: decode receiver session: %s: %w", what, ident.ErrMalformed)
	}
	if w.Version != messageVersion {
		return bad("version")
	}
	r := &ReceiverSession{next: w.Next, created: time.UnixMilli(w.Created).UTC()}
	if !copyExact(r.id[:], w.Session) || !copyExact(r.conversation[:], w.Conversation) || !copyExact(r.chainKey[:], w.ChainKey) {
		return bad("field size")
	}
	var err error
	if r.senderUser, err = ident.UserIDFromBytes(w.SenderUser); err != nil {
		return bad("sender user")
	}
	if r.sender, err = ident.DeviceIDFromBytes(w.Sender); err != nil {
		return bad("sender device")
	}
	if r.signing, err = ident.ParseSigningPublic(w.Signing); err != nil {
		return bad("signing key")
	}
	if w.Skipped == nil {
		return bad("skipped keys: not an array") // null would decode like []
	}
	if len(w.Skipped) > MaxSkippedMessageKeys {
		return bad("too many skipped keys")
	}
	r.skipped = make([]skippedKey, len(w.Skipped))
	for i, s := range w.Skipped {
		if s.N >= r.next || r.next-s.N > MaxSkippedMessageKeys || (i > 0 && s.N <= w.Skipped[i-1].N) {
			return bad("skipped counters not sorted inside the window")
		}
		r.skipped[i].n = s.N
		if !copyExact(r.skipped[i].key[:], s.Key) {
			return bad("skipped key size")
		}
	}
	return r, nil
}

// copyExact copies src into dst if they have the same length.
func copyExact(dst, src []byte) bool {
	if len(src) != len(dst) {
		return false
	}
	copy(dst, src)
	return true
}
