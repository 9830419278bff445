package wire

import (
	"fmt"

	"github.com/volo-chat/volo/ident"
)

// Signature domains of what a device signs for a node (e2ee.SigningKey.Sign).
const (
	// DomainWSAuth signs the answer to a WebSocket challenge.
	DomainWSAuth = "volo/v1/wsauth"
	// DomainAck signs an acknowledgement that lets relays delete envelopes.
	DomainAck = "volo/v1/ack"
)

// Frame limits.
const (
	// MaxFrameSize bounds one WebSocket message: a few envelopes of the
	// largest size, or a batch of small ones (PackEnvelopes).
	MaxFrameSize = 2 << 20
	// MaxSendBatch bounds the envelopes of one send or deliver frame.
	MaxSendBatch = 64
	// MaxAckBatch bounds the envelope references of one ack frame.
	MaxAckBatch = 1024
	// ChallengeNonceSize is the size of a WebSocket challenge nonce.
	ChallengeNonceSize = 32
)

// envelopeFrameOverhead is the most a send or deliver frame encodes
// besides its envelopes' byte strings: the map head (1 byte), the type
// (key and value, 2), the request ID (key and a uint of up to 9 bytes, 10)
// and the envelope array (key and a head of up to 2 bytes for at most
// MaxSendBatch elements, 3).
const envelopeFrameOverhead = 16

// One envelope of the largest size always fits in a send or deliver frame,
// with the 5-byte head of its byte string: this line does not compile once
// MaxEnvelopeSize or MaxFrameSize change so that it would not.
const _ = uint(MaxFrameSize - envelopeFrameOverhead - 5 - MaxEnvelopeSize)

// PackEnvelopes returns how many of the encoded envelopes, from the first,
// one send or deliver frame carries: as many as keep the encoded frame
// within MaxFrameSize, at most MaxSendBatch, and at least one (an envelope
// of at most MaxEnvelopeSize always fits alone). It returns 0 only when
// encoded is empty. Senders of send frames and nodes writing deliver frames
// cut their envelopes into frames with it.
func PackEnvelopes(encoded [][]byte) int {
	size := envelopeFrameOverhead
	for i, b := range encoded {
		if i == MaxSendBatch {
			return i
		}
		size += byteStringSize(len(b))
		if i > 0 && size > MaxFrameSize {
			return i
		}
	}
	return len(encoded)
}

// byteStringSize is the size of a CBOR byte string of n bytes: its head
// (major type 2 and the length) and the bytes.
func byteStringSize(n int) int {
	switch {
	case n < 24:
		return 1 + n
	case n <= 0xff:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	case uint64(n) <= 0xffffffff:
		return 5 + n
	}
	return 9 + n
}

// FrameType says what a frame is.
type FrameType uint8

// Frame types; the direction is in the comment.
const (
	FrameChallenge  FrameType = 1 // node → client: Nonce, PeerID
	FrameAuth       FrameType = 2 // client → node: User, Device, Sig, Token
	FrameReady      FrameType = 3 // node → client
	FrameSend       FrameType = 4 // client → node: RequestID, Envelopes
	FrameSendResult FrameType = 5 // node → client: RequestID, Results
	FrameDeliver    FrameType = 6 // node → client: Envelopes
	FrameAck        FrameType = 7 // client → node: Refs, Sig
	FrameError      FrameType = 8 // node → client: Code, Message
	FrameToken      FrameType = 9 // client → node: Token
)

// Frame is one WebSocket message: a CBOR map whose keys are the field
// numbers below, each field present only in the frame types that use it.
type Frame struct {
	Type      FrameType       `cbor:"1,keyasint"`
	Nonce     []byte          `cbor:"2,keyasint,omitempty"`
	PeerID    string          `cbor:"3,keyasint,omitempty"`
	User      *ident.UserID   `cbor:"4,keyasint,omitempty"`
	Device    *ident.DeviceID `cbor:"5,keyasint,omitempty"`
	Sig       []byte          `cbor:"6,keyasint,omitempty"`
	RequestID uint64          `cbor:"7,keyasint,omitempty"`
	Envelopes [][]byte        `cbor:"8,keyasint,omitempty"`
	Results   []SendResult    `cbor:"9,keyasint,omitempty"`
	Refs      [][]byte        `cbor:"10,keyasint,omitempty"` // EnvelopeRef.Bytes of each
	Code      string          `cbor:"11,keyasint,omitempty"`
	Message   string          `cbor:"12,keyasint,omitempty"`
	// Token is an encoded SubscribeToken.
	Token []byte `cbor:"13,keyasint,omitempty"`
}

// SendResult is the fate of one envelope of a send frame.
type SendResult struct {
	// Stored is the number of relays that have the envelope on disk.
	Stored uint64 `cbor:"1,keyasint"`
	// Code is empty on success, else one of the ResultXxx codes.
	Code string `cbor:"2,keyasint,omitempty"`
	// Relays is the number of relays of the envelope's mailbox (the k
	// closest relay nodes, or all there are on a smaller network); 0 when
	// the node did not get as far as placing it.
	Relays uint64 `cbor:"3,keyasint,omitempty"`
}

// Error codes of a send result and of error frames.
const (
	ResultMailboxFull  = "mailbox_full"
	ResultNoQuorum     = "no_quorum"
	ResultBadEnvelope  = "bad_envelope"
	ResultFuture       = "future"
	ResultRequestsFull = "requests_full"
	ResultRateLimited  = "rate_limited"
	ResultTooLarge     = "too_large"
	// CodeBadToken is the code of the error frame answering a token
	// frame whose token does not verify or is not fresh.
	CodeBadToken = "bad_token"
)

// Encode returns the frame's canonical CBOR encoding; it refuses a frame
// whose encoding is larger than MaxFrameSize, which no peer would read.
func (f Frame) Encode() ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(f)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("wire: frame type %d of %d bytes, limit %d", f.Type, len(b), MaxFrameSize)
	}
	return b, nil
}

// DecodeFrame decodes one WebSocket message and checks that the fields
// its type needs are there and within limits.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) > MaxFrameSize {
		return Frame{}, fmt.Errorf("wire: frame of %d bytes, limit %d", len(b), MaxFrameSize)
	}
	var f Frame
	if err := frameDecMode.Unmarshal(b, &f); err != nil {
		return Frame{}, fmt.Errorf("wire: bad frame: %w", err)
	}
	if err := f.check(); err != nil {
		return Frame{}, err
	}
	return f, nil
}

func (f Frame) check() error {
	bad := func(what string) error { return fmt.Errorf("wire: frame type %d: %s", f.Type, what) }
	switch f.Type {
	case FrameChallenge:
		if len(f.Nonce) != ChallengeNonceSize || f.PeerID == "" {
			return bad("needs a 32-byte nonce and a peer ID")
		}
	case FrameAuth:
		if f.User == nil || f.Device == nil || len(f.Sig) != 64 || len(f.Token) == 0 || len(f.Token) > MaxSubscribeTokenSize {
			return bad("needs user, device, a 64-byte signature and a subscribe token")
		}
	case FrameToken:
		if len(f.Token) == 0 || len(f.Token) > MaxSubscribeTokenSize {
			return bad("needs a subscribe token")
		}
	case FrameReady:
	case FrameSend, FrameDeliver:
		if len(f.Envelopes) == 0 || len(f.Envelopes) > MaxSendBatch {
			return bad(fmt.Sprintf("needs 1 to %d envelopes", MaxSendBatch))
		}
	case FrameSendResult:
		if len(f.Results) == 0 || len(f.Results) > MaxSendBatch {
			return bad(fmt.Sprintf("needs 1 to %d results", MaxSendBatch))
		}
	case FrameAck:
		if len(f.Refs) == 0 || len(f.Refs) > MaxAckBatch || len(f.Sig) != 64 {
			return bad(fmt.Sprintf("needs 1 to %d envelope references and a 64-byte signature", MaxAckBatch))
		}
		for _, r := range f.Refs {
			if len(r) != EnvelopeRefSize {
				return bad("envelope reference of the wrong size")
			}
		}
	case FrameError:
		if f.Code == "" {
			return bad("needs a code")
		}
	default:
		return fmt.Errorf("wire: unknown frame type %d", f.Type)
	}
	return nil
}

// WSAuthMessage is what a device signs (DomainWSAuth) to answer a node's
// challenge: the nonce, the node's peer ID, the user and the device.
func WSAuthMessage(nonce []byte, peerID string, user ident.UserID, device ident.DeviceID) []byte {
	b, _ := encMode.Marshal(struct {
		Nonce  []byte         `cbor:"1,keyasint"`
		PeerID string         `cbor:"2,keyasint"`
		User   ident.UserID   `cbor:"3,keyasint"`
		Device ident.DeviceID `cbor:"4,keyasint"`
	}{nonce, peerID, user, device})
	return b
}

// AckMessage is what a device signs (DomainAck) so that its relays delete
// envelopes: the device and the envelope references, in the order sent.
func AckMessage(device ident.DeviceID, refs []EnvelopeRef) []byte {
	b, _ := encMode.Marshal(struct {
		Device ident.DeviceID `cbor:"1,keyasint"`
		Refs   [][]byte       `cbor:"2,keyasint"`
	}{device, RefBytes(refs)})
	return b
}

// RefBytes returns the references as an ack carries them.
func RefBytes(refs []EnvelopeRef) [][]byte {
	raw := make([][]byte, len(refs))
	for i := range refs {
		raw[i] = refs[i].Bytes()
	}
	return raw
}

// RefsOf parses the references of an ack.
func RefsOf(raw [][]byte) ([]EnvelopeRef, error) {
	out := make([]EnvelopeRef, len(raw))
	for i, b := range raw {
		r, err := ParseEnvelopeRef(b)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}
