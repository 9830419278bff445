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
	// largest size, or a batch of small ones.
	MaxFrameSize = 2 << 20
	// MaxSendBatch bounds the envelopes of one send or deliver frame.
	MaxSendBatch = 64
	// MaxAckBatch bounds the envelope IDs of one ack frame.
	MaxAckBatch = 1024
	// ChallengeNonceSize is the size of a WebSocket challenge nonce.
	ChallengeNonceSize = 32
)

// FrameType says what a frame is.
type FrameType uint8

// Frame types; the direction is in the comment.
const (
	FrameChallenge  FrameType = 1 // node → client: Nonce, PeerID
	FrameAuth       FrameType = 2 // client → node: User, Device, Sig
	FrameReady      FrameType = 3 // node → client
	FrameSend       FrameType = 4 // client → node: RequestID, Envelopes
	FrameSendResult FrameType = 5 // node → client: RequestID, Results
	FrameDeliver    FrameType = 6 // node → client: Envelopes
	FrameAck        FrameType = 7 // client → node: IDs, Sig
	FrameError      FrameType = 8 // node → client: Code, Message
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
	IDs       [][]byte        `cbor:"10,keyasint,omitempty"`
	Code      string          `cbor:"11,keyasint,omitempty"`
	Message   string          `cbor:"12,keyasint,omitempty"`
}

// SendResult is the fate of one envelope of a send frame.
type SendResult struct {
	// Stored is the number of relays that have the envelope on disk.
	Stored uint64 `cbor:"1,keyasint"`
	// Code is empty on success, else one of the ResultXxx codes.
	Code string `cbor:"2,keyasint,omitempty"`
}

// Error codes of a send result and of error frames.
const (
	ResultMailboxFull = "mailbox_full"
	ResultNoQuorum    = "no_quorum"
	ResultBadEnvelope = "bad_envelope"
	ResultRateLimited = "rate_limited"
	ResultTooLarge    = "too_large"
)

// Encode returns the frame's canonical CBOR encoding.
func (f Frame) Encode() ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return encMode.Marshal(f)
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
		if f.User == nil || f.Device == nil || len(f.Sig) != 64 {
			return bad("needs user, device and a 64-byte signature")
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
		if len(f.IDs) == 0 || len(f.IDs) > MaxAckBatch || len(f.Sig) != 64 {
			return bad(fmt.Sprintf("needs 1 to %d envelope IDs and a 64-byte signature", MaxAckBatch))
		}
		for _, id := range f.IDs {
			if len(id) != EnvelopeIDSize {
				return bad("envelope ID of the wrong size")
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
// envelopes: the device and the envelope IDs, in the order sent.
func AckMessage(device ident.DeviceID, ids []EnvelopeID) []byte {
	raw := make([][]byte, len(ids))
	for i := range ids {
		raw[i] = ids[i][:]
	}
	b, _ := encMode.Marshal(struct {
		Device ident.DeviceID `cbor:"1,keyasint"`
		IDs    [][]byte       `cbor:"2,keyasint"`
	}{device, raw})
	return b
}

// IDsOf converts the IDs of an ack frame.
func IDsOf(raw [][]byte) []EnvelopeID {
	out := make([]EnvelopeID, len(raw))
	for i, r := range raw {
		copy(out[i][:], r)
	}
	return out
}
