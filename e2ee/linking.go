package e2ee

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode"

	"github.com/volo-chat/volo/ident"
)

// Device linking. The existing device shows a LinkingCode (QR or text); both
// devices derive from it the session key S and the RendezvousID of a
// short-lived mailbox on the node, and exchange LinkingSession messages
// through that mailbox:
//
//	existing -> new: ChainHead (the chain the new device joins)
//	new -> existing: AddDeviceRequest (signed by the new device)
//	existing -> new: the add-device Link (signed by the existing device)
//
// The new device then submits the link to the node.

// Sizes and limits of device linking.
const (
	// LinkingSecretSize is the size of the secret in a linking code (160 bits).
	LinkingSecretSize = 20
	// LinkingSessionKeySize is the size of the derived session key S.
	LinkingSessionKeySize = 32
	// MaxLinkingNodeLength bounds the node address carried by a linking code.
	MaxLinkingNodeLength = 512
	// MaxLinkingMessageSize bounds one sealed linking message.
	MaxLinkingMessageSize = 8192
	// MaxLinkingMessages bounds the messages one side sends in one session.
	MaxLinkingMessages = 16

	linkingCheckChars  = 3                                      // 15-bit checksum
	linkingSecretChars = (LinkingSecretSize*8 + 4) / 5          // 32
	linkingCodeChars   = linkingSecretChars + linkingCheckChars // 35
	linkingGroup       = 5                                      // characters per group in Text
	linkingKeyCheckLen = 8                                      // key check bytes in a message header
	linkingHeaderLen   = 1 + 1 + 4 + linkingKeyCheckLen         // version, role, seq, key check
	linkingVersion     = 1                                      //
	linkingQRPrefix    = "volo-link:v1:"                        //
	// maxLinkingCodeText bounds the text ParseLinkingCode looks at: the QR
	// form with a fully percent-escaped node address, or typed text with
	// generous spacing.
	maxLinkingCodeText = len(linkingQRPrefix) + 4*linkingCodeChars + len("?node=") + 3*MaxLinkingNodeLength
	linkingAlphabet    = "abcdefghijklmnopqrstuvwxyz234567" // RFC 4648 base32, lower case
)

// KDF labels of device linking (HKDF-SHA-256, salt "volo/v1/linking").
const (
	linkingSalt          = "volo/v1/linking"
	linkingInfoKey       = "volo/v1/linking session key"
	linkingInfoRV        = "volo/v1/linking rendezvous"
	linkingInfoKeyCheck  = "volo/v1/linking key check"
	linkingChecksumLabel = "volo/v1/linking code checksum"
)

// Errors of device linking.
var (
	// ErrBadLinkingCode: the text is not a linking code (length, characters, prefix, node).
	ErrBadLinkingCode = errors.New("e2ee: not a linking code")
	// ErrLinkingCodeChecksum: the code is well formed but its checksum does not
	// match, almost always a typo.
	ErrLinkingCodeChecksum = errors.New("e2ee: linking code checksum mismatch (typo?)")
	// ErrLinkingKey: the message was sealed with another session key S (another code).
	ErrLinkingKey = errors.New("e2ee: linking message for another linking code")
	// ErrLinkingReplay: a message with this sequence number was already opened.
	ErrLinkingReplay = errors.New("e2ee: replayed linking message")
	// ErrLinkingReflected: the message was sealed by this side, not the peer.
	ErrLinkingReflected = errors.New("e2ee: reflected linking message")
	// ErrLinkingOrder: a message was skipped, or too many messages were sent.
	ErrLinkingOrder = errors.New("e2ee: linking message out of order")
)

var linkingEncoding = base32.NewEncoding(linkingAlphabet).WithPadding(base32.NoPadding)

// LinkingCode is the secret an existing device shows to the device being
// linked, plus the address of the node whose rendezvous mailbox they use.
// Its String never prints the secret; Text and QR do, for display.
type LinkingCode struct {
	secret [LinkingSecretSize]byte
	// Node is the address (URL or multiaddr) of the node holding the
	// rendezvous mailbox; it travels in the QR form only. Optional.
	Node string
}

// NewLinkingCode draws a fresh 160-bit secret from rand.
func NewLinkingCode(rand io.Reader) (LinkingCode, error) {
	var c LinkingCode
	if _, err := io.ReadFull(rand, c.secret[:]); err != nil {
		return LinkingCode{}, fmt.Errorf("e2ee: new linking code: %w", err)
	}
	return c, nil
}

func linkingChecksum(secret []byte) string {
	h := sha256.Sum256(append([]byte(linkingChecksumLabel+"\x00"), secret...))
	v := uint32(h[0])<<7 | uint32(h[1])>>1 // 15 bits
	return string([]byte{linkingAlphabet[v>>10&31], linkingAlphabet[v>>5&31], linkingAlphabet[v&31]})
}

func (c LinkingCode) compact() string {
	return linkingEncoding.EncodeToString(c.secret[:]) + linkingChecksum(c.secret[:])
}

// Text returns the typable form: 35 lower-case base32 characters (32 for the
// secret, 3 for a 15-bit checksum) in groups of five joined by '-'.
func (c LinkingCode) Text() string {
	s := c.compact()
	var b strings.Builder
	for i := 0; i < len(s); i += linkingGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+linkingGroup, len(s))])
	}
	return b.String()
}

// QR returns the QR payload: "volo-link:v1:" + the 35 characters, then
// "?node=" + the query-escaped node address if Node is set.
func (c LinkingCode) QR() string {
	s := linkingQRPrefix + c.compact()
	if c.Node != "" {
		s += "?" + url.Values{"node": {c.Node}}.Encode()
	}
	return s
}

// String never prints the secret.
func (c LinkingCode) String() string { return "LinkingCode(redacted)" }

// GoString never prints the secret.
func (c LinkingCode) GoString() string { return c.String() }

// ParseLinkingCode reads either form: the QR payload, or the text typed by a
// person (case, spaces and '-' do not matter). A typo is reported as
// ErrLinkingCodeChecksum, anything else as ErrBadLinkingCode.
func ParseLinkingCode(s string) (LinkingCode, error) {
	if len(s) > maxLinkingCodeText {
		return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: %d bytes: %w", len(s), ErrBadLinkingCode)
	}
	var c LinkingCode
	body := s
	if len(s) >= len(linkingQRPrefix) && strings.EqualFold(s[:len(linkingQRPrefix)], linkingQRPrefix) {
		body = s[len(linkingQRPrefix):]
		if i := strings.IndexByte(body, '?'); i >= 0 {
			q, err := url.ParseQuery(body[i+1:])
			if err != nil {
				return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: query: %v: %w", err, ErrBadLinkingCode)
			}
			for k, v := range q {
				if k != "node" || len(v) != 1 {
					return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: unexpected query field %q: %w", k, ErrBadLinkingCode)
				}
			}
			c.Node = q.Get("node")
			if err := checkLinkingNode(c.Node); err != nil {
				return LinkingCode{}, err
			}
			body = body[:i]
		}
	}
	var b strings.Builder
	for i, r := range body {
		switch {
		case r == '-' || unicode.IsSpace(r):
			continue
		case r >= 'A' && r <= 'Z':
			r += 'a' - 'A'
		case (r >= 'a' && r <= 'z') || (r >= '2' && r <= '7'):
		default:
			hint := ""
			switch r {
			case '0':
				hint = " (the code has no 0: did you mean o?)"
			case '1':
				hint = " (the code has no 1: did you mean l or i?)"
			case '8':
				hint = " (the code has no 8: did you mean b?)"
			case '9':
				hint = " (the code has no 9: did you mean g?)"
			}
			return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: invalid character %q at position %d%s: %w", r, i+1, hint, ErrBadLinkingCode)
		}
		b.WriteRune(r)
	}
	compact := b.String()
	if len(compact) != linkingCodeChars {
		return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: %d characters, want %d: %w", len(compact), linkingCodeChars, ErrBadLinkingCode)
	}
	secret, err := linkingEncoding.DecodeString(compact[:linkingSecretChars])
	if err != nil || len(secret) != LinkingSecretSize {
		return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: %v: %w", err, ErrBadLinkingCode)
	}
	if linkingChecksum(secret) != compact[linkingSecretChars:] {
		return LinkingCode{}, fmt.Errorf("e2ee: parse linking code: %w", ErrLinkingCodeChecksum)
	}
	copy(c.secret[:], secret)
	return c, nil
}

func checkLinkingNode(node string) error {
	if node == "" || len(node) > MaxLinkingNodeLength {
		return fmt.Errorf("e2ee: parse linking code: node address of %d bytes, want 1 to %d: %w", len(node), MaxLinkingNodeLength, ErrBadLinkingCode)
	}
	for _, r := range node {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("e2ee: parse linking code: node address has character %q: %w", r, ErrBadLinkingCode)
		}
	}
	return nil
}

// Equal reports whether c and o carry the same secret and node.
func (c LinkingCode) Equal(o LinkingCode) bool {
	return subtle.ConstantTimeCompare(c.secret[:], o.secret[:]) == 1 && c.Node == o.Node
}

func (c LinkingCode) derive(info string, n int) []byte {
	b, err := hkdf.Key(sha256.New, c.secret[:], []byte(linkingSalt), info, n)
	if err != nil {
		panic(err) // n is a small constant
	}
	return b
}

// SessionKey returns S = HKDF-SHA-256(secret, salt "volo/v1/linking",
// info "volo/v1/linking session key", 32 bytes). It is secret.
func (c LinkingCode) SessionKey() []byte { return c.derive(linkingInfoKey, LinkingSessionKeySize) }

// Rendezvous returns the mailbox name: HKDF-SHA-256(secret, salt
// "volo/v1/linking", info "volo/v1/linking rendezvous", 32 bytes). It is
// public; being an independent HKDF output, it reveals nothing of S.
func (c LinkingCode) Rendezvous() ident.RendezvousID {
	var r ident.RendezvousID
	copy(r[:], c.derive(linkingInfoRV, ident.RendezvousIDSize))
	return r
}

// LinkingRole is the side of a linking session.
type LinkingRole uint8

// Linking roles.
const (
	LinkingExistingDevice LinkingRole = 1 // shows the code, signs the add-device link
	LinkingNewDevice      LinkingRole = 2 // reads the code, signs the request
)

func (r LinkingRole) String() string {
	switch r {
	case LinkingExistingDevice:
		return "existing-device"
	case LinkingNewDevice:
		return "new-device"
	}
	return fmt.Sprintf("LinkingRole(%d)", uint8(r))
}

// LinkingSession seals and opens the messages of one side of a linking
// exchange. Each direction has its own sequence numbers starting at 0;
// Open accepts exactly the peer's next message, so messages cannot be
// replayed, reordered, dropped unnoticed or reflected back to their sender.
// A LinkingSession is not safe for concurrent use.
type LinkingSession struct {
	role       LinkingRole
	aead       cipher.AEAD
	rendezvous ident.RendezvousID
	keyCheck   [linkingKeyCheckLen]byte
	sent, recv uint32
}

// NewLinkingSession starts one side of a linking exchange.
func NewLinkingSession(code LinkingCode, role LinkingRole) (*LinkingSession, error) {
	if role != LinkingExistingDevice && role != LinkingNewDevice {
		return nil, fmt.Errorf("e2ee: new linking session: role %d: %w", role, ident.ErrMalformed)
	}
	block, err := aes.NewCipher(code.SessionKey())
	if err != nil {
		return nil, fmt.Errorf("e2ee: new linking session: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("e2ee: new linking session: %w", err)
	}
	s := &LinkingSession{role: role, aead: aead, rendezvous: code.Rendezvous()}
	copy(s.keyCheck[:], code.derive(linkingInfoKeyCheck, linkingKeyCheckLen))
	return s, nil
}

// Rendezvous returns the mailbox name both sides use.
func (s *LinkingSession) Rendezvous() ident.RendezvousID { return s.rendezvous }

func linkingNonce(role LinkingRole, seq uint32) []byte {
	n := make([]byte, 12)
	n[0] = byte(role)
	binary.BigEndian.PutUint32(n[8:], seq)
	return n
}

func (s *LinkingSession) aad(header []byte) []byte {
	a := make([]byte, 0, len(linkingSalt)+1+ident.RendezvousIDSize+len(header))
	a = append(a, linkingSalt...)
	a = append(a, 0)
	a = append(a, s.rendezvous[:]...)
	return append(a, header...)
}

// Seal encrypts the next message of this side:
// version (1) || role (1) || seq (4, big endian) || key check (8) || AES-256-GCM(S).
func (s *LinkingSession) Seal(plaintext []byte) ([]byte, error) {
	if s.sent >= MaxLinkingMessages {
		return nil, fmt.Errorf("e2ee: seal linking message: %d messages sent already: %w", s.sent, ErrLinkingOrder)
	}
	if linkingHeaderLen+len(plaintext)+s.aead.Overhead() > MaxLinkingMessageSize {
		return nil, fmt.Errorf("e2ee: seal linking message: %d bytes, limit %d: %w", len(plaintext), MaxLinkingMessageSize-linkingHeaderLen-s.aead.Overhead(), ident.ErrMalformed)
	}
	msg := make([]byte, linkingHeaderLen, linkingHeaderLen+len(plaintext)+s.aead.Overhead())
	msg[0] = linkingVersion
	msg[1] = byte(s.role)
	binary.BigEndian.PutUint32(msg[2:], s.sent)
	copy(msg[6:], s.keyCheck[:])
	msg = s.aead.Seal(msg, linkingNonce(s.role, s.sent), plaintext, s.aad(msg[:linkingHeaderLen]))
	s.sent++
	return msg, nil
}

// Open decrypts the peer's next message. On error the session is unchanged.
func (s *LinkingSession) Open(msg []byte) ([]byte, error) {
	if len(msg) < linkingHeaderLen+s.aead.Overhead() || len(msg) > MaxLinkingMessageSize {
		return nil, fmt.Errorf("e2ee: open linking message: %d bytes: %w", len(msg), ident.ErrMalformed)
	}
	if msg[0] != linkingVersion {
		return nil, fmt.Errorf("e2ee: open linking message: version %d: %w", msg[0], ident.ErrMalformed)
	}
	role := LinkingRole(msg[1])
	if role != LinkingExistingDevice && role != LinkingNewDevice {
		return nil, fmt.Errorf("e2ee: open linking message: role %d: %w", msg[1], ident.ErrMalformed)
	}
	if subtle.ConstantTimeCompare(msg[6:linkingHeaderLen], s.keyCheck[:]) != 1 {
		return nil, fmt.Errorf("e2ee: open linking message: %w", ErrLinkingKey)
	}
	seq := binary.BigEndian.Uint32(msg[2:])
	if role == s.role {
		// Only a message sealed with S tells that another device of this
		// side holds the code; anything else claiming this side's role is
		// junk anyone could have posted.
		if _, err := s.aead.Open(nil, linkingNonce(role, seq), msg[linkingHeaderLen:], s.aad(msg[:linkingHeaderLen])); err != nil {
			return nil, fmt.Errorf("e2ee: open linking message seq %d: %w", seq, ErrTampered)
		}
		return nil, fmt.Errorf("e2ee: open linking message: sent by %s, which is this side: %w", role, ErrLinkingReflected)
	}
	switch {
	case seq < s.recv:
		return nil, fmt.Errorf("e2ee: open linking message: seq %d, next is %d: %w", seq, s.recv, ErrLinkingReplay)
	case seq > s.recv || seq >= MaxLinkingMessages:
		return nil, fmt.Errorf("e2ee: open linking message: seq %d, next is %d: %w", seq, s.recv, ErrLinkingOrder)
	}
	pt, err := s.aead.Open(nil, linkingNonce(role, seq), msg[linkingHeaderLen:], s.aad(msg[:linkingHeaderLen]))
	if err != nil {
		return nil, fmt.Errorf("e2ee: open linking message seq %d: %w", seq, ErrTampered)
	}
	s.recv++
	return pt, nil
}
