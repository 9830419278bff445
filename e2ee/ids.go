package e2ee

import (
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/detcbor"
)

// SessionID names a sender session: 16 random bytes.
type SessionID [SessionIDSize]byte

// String returns lower-case unpadded base32.
func (id SessionID) String() string { return ident.Base32(id[:]) }

// IsZero reports whether id is all zeros (never a valid session).
func (id SessionID) IsZero() bool { return id == SessionID{} }

// ParseSessionID parses the form written by String.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	err := parseFixedB32("session ID", s, id[:])
	return id, err
}

// MarshalCBOR encodes the ID as a 16-byte CBOR byte string.
func (id SessionID) MarshalCBOR() ([]byte, error) { return detcbor.Marshal(id[:]) }

// UnmarshalCBOR decodes the form written by MarshalCBOR.
func (id *SessionID) UnmarshalCBOR(data []byte) error {
	return unmarshalFixedBytes("session ID", data, id[:])
}

// ConversationID names a conversation: a group's random ID, or for a 1:1
// conversation DirectConversationID of its two users.
type ConversationID [ConversationIDSize]byte

// String returns lower-case unpadded base32.
func (id ConversationID) String() string { return ident.Base32(id[:]) }

// IsZero reports whether id is all zeros (never a valid conversation).
func (id ConversationID) IsZero() bool { return id == ConversationID{} }

// ParseConversationID parses the form written by String.
func ParseConversationID(s string) (ConversationID, error) {
	var id ConversationID
	err := parseFixedB32("conversation ID", s, id[:])
	return id, err
}

// MarshalCBOR encodes the ID as a 16-byte CBOR byte string.
func (id ConversationID) MarshalCBOR() ([]byte, error) { return detcbor.Marshal(id[:]) }

// UnmarshalCBOR decodes the form written by MarshalCBOR.
func (id *ConversationID) UnmarshalCBOR(data []byte) error {
	return unmarshalFixedBytes("conversation ID", data, id[:])
}

// NewConversationID draws a random conversation (group) ID from rand.
func NewConversationID(rand io.Reader) (ConversationID, error) {
	var id ConversationID
	if _, err := io.ReadFull(randOrDefault(rand), id[:]); err != nil {
		return id, fmt.Errorf("e2ee: new conversation ID: %w", err)
	}
	return id, nil
}

// DirectConversationID is the ID of the 1:1 conversation of users a and b
// (in either order): the first 16 bytes of
// SHA-256("volo/v1/direct" || 0x00 || min(a, b) || max(a, b)).
func DirectConversationID(a, b ident.UserID) ConversationID {
	if a.Compare(b) > 0 {
		a, b = b, a
	}
	h := sha256.New()
	h.Write([]byte(directConversationLabel))
	h.Write([]byte{0})
	h.Write(a.Bytes())
	h.Write(b.Bytes())
	var id ConversationID
	copy(id[:], h.Sum(nil))
	return id
}

func parseFixedB32(what, s string, out []byte) error {
	b, ok := ident.ParseBase32(s)
	if !ok || len(b) != len(out) {
		return fmt.Errorf("e2ee: parse %s %q: want %d bytes in lower-case base32: %w", what, s, len(out), ident.ErrBadID)
	}
	copy(out, b)
	return nil
}

func unmarshalFixedBytes(what string, data, out []byte) error {
	var b []byte
	if err := ident.DecMode.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("e2ee: decode %s: %v: %w", what, err, ident.ErrBadID)
	}
	if len(b) != len(out) {
		return fmt.Errorf("e2ee: decode %s: %d bytes, want %d: %w", what, len(b), len(out), ident.ErrBadID)
	}
	copy(out, b)
	return nil
}
