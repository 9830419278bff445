package relay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/wire"
)

// ProtocolID is the node-to-node relay protocol: one request per stream
// (store, handover, ack), or a subscription that stays open while the relay
// pushes a device's envelopes.
const ProtocolID = "/volo/relay/1.0.0"

// Role is the role a relay node advertises (p2p.Host.Handle).
const Role = "relay"

// Limits and deadlines of the relay protocol.
const (
	// MaxFrameSize bounds one frame (after its uvarint length prefix).
	MaxFrameSize = 4 << 20
	// MaxBatch bounds the envelopes of one store, handover or push frame.
	MaxBatch = 256
	// batchBytes is the size at which a sender starts a new frame; one
	// envelope of wire.MaxEnvelopeSize always fits.
	batchBytes = MaxFrameSize - 64<<10
	// envelopeCost bounds what an envelope adds to a frame besides its
	// ciphertext: the rest of its encoding (at most
	// wire.MaxEnvelopeSize - wire.MaxCiphertextSize) and its byte-string
	// head.
	envelopeCost = 256
	// MaxAckRefs bounds the envelope references of one ack.
	MaxAckRefs = wire.MaxAckBatch
	// RequestTimeout bounds a store, handover or ack exchange, dial included.
	RequestTimeout = 20 * time.Second
	// PushTimeout bounds writing one push frame to a subscriber.
	PushTimeout = 30 * time.Second
	// SubscribeOpenTimeout bounds opening a subscription stream.
	SubscribeOpenTimeout = 10 * time.Second
)

// Frame types. Requests go from the asking node to the relay; replies back.
const (
	msgStore       uint8 = 1 // request: Envelopes
	msgSubscribe   uint8 = 2 // request: Token
	msgAck         uint8 = 3 // request: DevicePublic, Refs, Sig
	msgHandover    uint8 = 4 // request: Device, Envelopes (all addressed to Device), Token (optional)
	msgStoreResult uint8 = 5 // reply to store and handover: Results, one per envelope
	msgPush        uint8 = 6 // reply to subscribe, repeated: Envelopes
	msgAckResult   uint8 = 7 // reply to ack: Deleted
	msgError       uint8 = 8 // reply to anything: Code, Message
)

// Result and error codes on the wire.
const (
	codeOK             = ""
	codeMailboxFull    = "mailbox_full"
	codeExpired        = "expired"
	codeFuture         = "future"
	codeNotResponsible = "not_responsible"
	codeBadEnvelope    = "bad_envelope"
	codeInternal       = "internal"
	codeBadRequest     = "bad_request"
	codeBadAck         = "bad_ack"
	codeUnauthorized   = "unauthorized"
	codeRequestsFull   = "requests_full"
	codeRateLimited    = "rate_limited"
)

// Errors callers of the relay branch on.
var (
	// ErrNoQuorum reports an envelope that fewer than the write quorum of
	// its relays stored.
	ErrNoQuorum = errors.New("relay: write quorum not reached")
	// ErrBadAck reports an ack whose signature or device does not verify.
	ErrBadAck = errors.New("relay: bad ack")
	// ErrBadFrame reports a relay protocol frame that does not decode or
	// breaks a limit.
	ErrBadFrame = errors.New("relay: bad frame")
	// ErrUnauthorized reports a subscription without a valid, fresh
	// subscribe token for the subscribing node.
	ErrUnauthorized = errors.New("relay: unauthorized")
	// ErrRemote reports an error frame from a relay.
	ErrRemote = errors.New("relay: relay refused")
	// ErrNotResponsible reports an envelope sent to a relay that is not
	// among the Replicas closest relays of its mailbox.
	ErrNotResponsible = errors.New("relay: not a relay of the mailbox")
	// ErrRateLimited reports envelopes refused because their sending peer
	// stored more than the relay's store_rate allows.
	ErrRateLimited = errors.New("relay: rate limited")
	// ErrNoRelays reports that no relay node was found for a mailbox.
	ErrNoRelays = errors.New("relay: no relay nodes")
	// ErrStopped reports a call on a stopped service.
	ErrStopped = errors.New("relay: service stopped")
)

// frame is the CBOR form of every relay message: a map whose keys are the
// field numbers below, each present only in the types that use it.
type frame struct {
	Type         uint8    `cbor:"1,keyasint"`
	Device       []byte   `cbor:"2,keyasint,omitempty"`
	Envelopes    [][]byte `cbor:"3,keyasint,omitempty"`
	DevicePublic []byte   `cbor:"4,keyasint,omitempty"`
	Refs         [][]byte `cbor:"5,keyasint,omitempty"`
	Sig          []byte   `cbor:"6,keyasint,omitempty"`
	Results      []string `cbor:"7,keyasint,omitempty"`
	Deleted      uint64   `cbor:"8,keyasint,omitempty"`
	Code         string   `cbor:"9,keyasint,omitempty"`
	Message      string   `cbor:"10,keyasint,omitempty"`
	Token        []byte   `cbor:"11,keyasint,omitempty"`
}

// request is a decoded, checked request.
type request struct {
	Type      uint8
	Device    ident.DeviceID      // subscribe, handover, ack
	Envelopes []wire.Envelope     // store, handover
	Public    ident.DevicePublic  // ack
	Refs      []wire.EnvelopeRef  // ack
	Sig       []byte              // ack
	Token     wire.SubscribeToken // subscribe; handover when it has one
}

// reply is a decoded, checked reply.
type reply struct {
	Type      uint8
	Results   []string
	Envelopes []wire.Envelope
	Deleted   uint64
	Code      string
	Message   string
}

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = wire.StrictDecMode(max(MaxAckRefs, MaxBatch))
)

func badFrame(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, a...))
}

// encodeFrame returns the CBOR of f.
func encodeFrame(f frame) ([]byte, error) {
	b, err := encMode.Marshal(f)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFrameSize {
		return nil, badFrame("frame of %d bytes, limit %d", len(b), MaxFrameSize)
	}
	return b, nil
}

func storeFrame(typ uint8, device ident.DeviceID, envs []wire.Envelope) (frame, error) {
	f := frame{Type: typ, Envelopes: make([][]byte, len(envs))}
	if typ == msgHandover {
		f.Device = device.Bytes()
	}
	for i, e := range envs {
		b, err := e.Encode()
		if err != nil {
			return frame{}, err
		}
		f.Envelopes[i] = b
	}
	return f, nil
}

// envelopeCost covers an envelope's encoding beyond its ciphertext with
// the 5-byte head of its byte string, and one envelope of the largest
// size fits in a frame: these lines do not compile once a limit changes
// so that either would not hold.
const (
	_ = uint(envelopeCost - (wire.MaxEnvelopeSize - wire.MaxCiphertextSize) - 5)
	_ = uint(batchBytes - wire.MaxCiphertextSize - envelopeCost)
)

// frameSize bounds what e adds to a store, handover or push frame.
func frameSize(e wire.Envelope) int { return len(e.Ciphertext) + envelopeCost }

// frameRun returns how many of stored, from the first, one handover or push
// frame carries: their sizes within batchBytes, at least one. Callers list
// at most MaxBatch.
func frameRun(stored []Stored) int {
	size := 0
	for i, st := range stored {
		size += frameSize(st.Envelope)
		if i > 0 && size > batchBytes {
			return i
		}
	}
	return len(stored)
}

func ackFrame(dev ident.DevicePublic, refs []wire.EnvelopeRef, sig []byte) frame {
	return frame{Type: msgAck, DevicePublic: dev.Encode(), Refs: wire.RefBytes(refs), Sig: sig}
}

func decodeEnvelopes(raw [][]byte) ([]wire.Envelope, error) {
	if len(raw) == 0 || len(raw) > MaxBatch {
		return nil, badFrame("%d envelopes, want 1 to %d", len(raw), MaxBatch)
	}
	out := make([]wire.Envelope, len(raw))
	for i, b := range raw {
		e, err := wire.DecodeEnvelope(b)
		if err != nil {
			return nil, fmt.Errorf("%w: envelope %d: %w", ErrBadFrame, i, err)
		}
		out[i] = e
	}
	return out, nil
}

// decodeRequest decodes a request frame and checks everything that can be
// checked without the store: the fields of its type, every envelope, the
// device of a handover, the ack's device key and signature.
func decodeRequest(b []byte) (request, error) {
	if len(b) > MaxFrameSize {
		return request{}, badFrame("frame of %d bytes, limit %d", len(b), MaxFrameSize)
	}
	var f frame
	if err := decMode.Unmarshal(b, &f); err != nil {
		return request{}, badFrame("%v", err)
	}
	r := request{Type: f.Type}
	extra := len(f.Results) > 0 || f.Deleted != 0 || f.Code != "" || f.Message != ""
	if f.Token != nil && f.Type != msgSubscribe && f.Type != msgHandover {
		return request{}, badFrame("token in a request of type %d", f.Type)
	}
	switch f.Type {
	case msgStore:
		if extra || f.Device != nil || f.DevicePublic != nil || f.Refs != nil || f.Sig != nil {
			return request{}, badFrame("store: unexpected fields")
		}
		envs, err := decodeEnvelopes(f.Envelopes)
		if err != nil {
			return request{}, err
		}
		r.Envelopes = envs
	case msgHandover:
		if extra || f.DevicePublic != nil || f.Refs != nil || f.Sig != nil {
			return request{}, badFrame("handover: unexpected fields")
		}
		dev, err := ident.DeviceIDFromBytes(f.Device)
		if err != nil {
			return request{}, badFrame("handover: %v", err)
		}
		envs, err := decodeEnvelopes(f.Envelopes)
		if err != nil {
			return request{}, err
		}
		for i, e := range envs {
			if !e.To.Equal(dev) {
				return request{}, badFrame("handover: envelope %d is for another device", i)
			}
		}
		r.Device, r.Envelopes = dev, envs
		if f.Token != nil {
			tok, err := wire.DecodeSubscribeToken(f.Token)
			if err != nil {
				return request{}, badFrame("handover: %v", err)
			}
			if !tok.Device.Equal(dev) {
				return request{}, badFrame("handover: token of another device")
			}
			r.Token = tok
		}
	case msgSubscribe:
		// A subscribe without a valid token is unauthorized, whatever else
		// it carries.
		tok, err := wire.DecodeSubscribeToken(f.Token)
		if err != nil {
			return request{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		if extra || f.Device != nil || f.Envelopes != nil || f.DevicePublic != nil || f.Refs != nil || f.Sig != nil {
			return request{}, badFrame("subscribe: unexpected fields")
		}
		r.Device, r.Token = tok.Device, tok
	case msgAck:
		if extra || f.Envelopes != nil || f.Device != nil {
			return request{}, badFrame("ack: unexpected fields")
		}
		pub, err := ident.DecodeDevicePublic(f.DevicePublic)
		if err != nil {
			return request{}, badFrame("ack: device: %v", err)
		}
		if len(f.Refs) == 0 || len(f.Refs) > MaxAckRefs {
			return request{}, badFrame("ack: %d references, want 1 to %d", len(f.Refs), MaxAckRefs)
		}
		refs, err := wire.RefsOf(f.Refs)
		if err != nil {
			return request{}, badFrame("ack: %v", err)
		}
		r.Public, r.Device, r.Refs, r.Sig = pub, pub.ID(), refs, f.Sig
		if err := verifyAck(r.Public, r.Refs, r.Sig); err != nil {
			return request{}, err
		}
	default:
		return request{}, badFrame("unknown request type %d", f.Type)
	}
	return r, nil
}

// verifyAck checks the device's signature over wire.AckMessage.
func verifyAck(dev ident.DevicePublic, refs []wire.EnvelopeRef, sig []byte) error {
	if err := dev.Signing.Verify(wire.DomainAck, wire.AckMessage(dev.ID(), refs), sig); err != nil {
		return fmt.Errorf("%w: %w", ErrBadAck, err)
	}
	return nil
}

// decodeReply decodes a reply frame and checks the fields of its type and
// every pushed envelope.
func decodeReply(b []byte) (reply, error) {
	if len(b) > MaxFrameSize {
		return reply{}, badFrame("frame of %d bytes, limit %d", len(b), MaxFrameSize)
	}
	var f frame
	if err := decMode.Unmarshal(b, &f); err != nil {
		return reply{}, badFrame("%v", err)
	}
	if f.Device != nil || f.DevicePublic != nil || f.Refs != nil || f.Sig != nil || f.Token != nil {
		return reply{}, badFrame("reply with request fields")
	}
	r := reply{Type: f.Type}
	switch f.Type {
	case msgStoreResult:
		if f.Envelopes != nil || f.Deleted != 0 || f.Code != "" || f.Message != "" {
			return reply{}, badFrame("store result: unexpected fields")
		}
		if len(f.Results) == 0 || len(f.Results) > MaxBatch {
			return reply{}, badFrame("store result: %d results", len(f.Results))
		}
		for _, c := range f.Results {
			switch c {
			case codeOK, codeMailboxFull, codeRequestsFull, codeExpired, codeFuture, codeNotResponsible, codeRateLimited, codeBadEnvelope, codeInternal:
			default:
				return reply{}, badFrame("store result: unknown code %q", c)
			}
		}
		r.Results = f.Results
	case msgPush:
		if f.Results != nil || f.Deleted != 0 || f.Code != "" || f.Message != "" {
			return reply{}, badFrame("push: unexpected fields")
		}
		envs, err := decodeEnvelopes(f.Envelopes)
		if err != nil {
			return reply{}, err
		}
		r.Envelopes = envs
	case msgAckResult:
		if f.Results != nil || f.Envelopes != nil || f.Code != "" || f.Message != "" {
			return reply{}, badFrame("ack result: unexpected fields")
		}
		if f.Deleted > MaxAckRefs {
			return reply{}, badFrame("ack result: %d deleted", f.Deleted)
		}
		r.Deleted = f.Deleted
	case msgError:
		if f.Results != nil || f.Envelopes != nil || f.Deleted != 0 || f.Code == "" {
			return reply{}, badFrame("error: needs a code and nothing else")
		}
		if len(f.Message) > maxErrorMessage {
			return reply{}, badFrame("error: message of %d bytes", len(f.Message))
		}
		r.Code, r.Message = f.Code, f.Message
	default:
		return reply{}, badFrame("unknown reply type %d", f.Type)
	}
	return r, nil
}

// maxErrorMessage bounds the message of an error frame.
const maxErrorMessage = 1024

// framing is the relay protocol's length-prefixed framing.
var framing = service.Framing{Name: "relay", BadFrame: ErrBadFrame}

// writeFrame writes f with its uvarint length prefix.
func writeFrame(w io.Writer, f frame) error {
	b, err := encodeFrame(f)
	if err != nil {
		return err
	}
	_, err = w.Write(service.AppendFrame(make([]byte, 0, len(b)+binary.MaxVarintLen32), b))
	return err
}

// readFrame reads one length-prefixed frame of at most MaxFrameSize bytes.
func readFrame(r *bufio.Reader) ([]byte, error) { return framing.Read(r, MaxFrameSize, nil) }

// Kind is the reply's frame type.
func (r reply) Kind() uint8 { return r.Type }

// Refusal is the code and message of an error frame.
func (r reply) Refusal() (code, message string, ok bool) {
	return r.Code, r.Message, r.Type == msgError
}

// refused is the error of an error frame from relay p.
func refused(p peer.ID, code, msg string) error {
	switch code {
	case codeBadAck:
		return fmt.Errorf("%w: relay %s: %s", ErrBadAck, p, msg)
	case codeUnauthorized:
		return fmt.Errorf("%w: relay %s: %s", ErrUnauthorized, p, msg)
	}
	return fmt.Errorf("%w: %s: %s: %s", ErrRemote, p, code, msg)
}

// roundTrip sends one request to relay p and reads its reply, which must
// be of type want or an error frame.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, f frame, want uint8) (reply, error) {
	return s.client.RoundTrip(ctx, p, func(w io.Writer) error { return writeFrame(w, f) }, want, nil)
}

// storeCodes are the per-envelope results of a store or handover.
var storeCodes = service.Codes{
	{Code: codeMailboxFull, Err: wire.ErrMailboxFull},
	{Code: codeExpired, Err: wire.ErrExpired},
	{Code: codeFuture, Err: wire.ErrFromFuture},
	{Code: codeNotResponsible, Err: ErrNotResponsible},
	{Code: codeRequestsFull, Err: wire.ErrRequestsFull},
	{Code: codeRateLimited, Err: ErrRateLimited},
	{Code: codeBadEnvelope, Err: wire.ErrBadEnvelope},
}

// codeOf maps a per-envelope store error to its wire code.
func codeOf(err error) string {
	if err == nil {
		return codeOK
	}
	if c, ok := storeCodes.CodeOf(err); ok {
		return c
	}
	return codeInternal
}

// errOf maps a wire code back to the error callers branch on.
func errOf(code string) error {
	if code == codeOK {
		return nil
	}
	if err, ok := storeCodes.ErrOf(code); ok {
		return err
	}
	return fmt.Errorf("%w: %s", ErrRemote, code)
}
