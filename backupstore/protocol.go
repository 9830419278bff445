package backupstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/wire"
)

// ProtocolID is the node-to-node backup protocol: one request per stream
// (store, replicate, release, get, has), one reply.
const ProtocolID = "/volo/backup/1.0.0"

// Role is the role a storage node advertises (p2p.Host.Handle).
const Role = "backup"

// Limits and deadlines of the backup protocol. A message is a header (a
// uvarint length, then CBOR of at most MaxHeaderSize bytes) followed, for
// store, replicate and a get reply, by the chunk's raw bytes (a uvarint
// length of at most wire.MaxChunkSize, then the bytes), so a chunk is never
// copied into or out of CBOR.
const (
	// MaxHeaderSize bounds one CBOR header.
	MaxHeaderSize = 64 << 10
	// MaxHasBatch bounds the CIDs of one has request.
	MaxHasBatch = 1024
	// RequestTimeout bounds one exchange, dial included.
	RequestTimeout = 30 * time.Second
	// maxErrorMessage bounds the message of an error reply.
	maxErrorMessage = 1024
	// maxWhatLen bounds the entry peer ID string of an authorization.
	maxPeerIDLen = 128
)

// Message types. Requests go from the asking node to the storage node.
const (
	msgStore     uint8 = 1 // request: CID, Kind, Auth, Entry (= the sender); body: chunk
	msgReplicate uint8 = 2 // request: CID, Kind, Auth, Entry (the node the device signed for); body: chunk
	msgRelease   uint8 = 3 // request: CID, Auth, Entry (= the sender)
	msgGet       uint8 = 4 // request: CID
	msgHas       uint8 = 5 // request: CIDs
	msgOK        uint8 = 6 // reply to store, replicate, release: New
	msgChunk     uint8 = 7 // reply to get; body: chunk
	msgHasResult uint8 = 8 // reply to has: Held, one byte (0 or 1) per CID
	msgError     uint8 = 9 // reply to anything: Code, Message
)

// Chunk kinds.
const (
	kindChunk    uint8 = 1
	kindManifest uint8 = 2
)

// Error codes on the wire.
const (
	codeBadRequest    = "bad_request"
	codeBadChunk      = "bad_chunk"
	codeUnauth        = "unauthenticated"
	codeQuotaExceeded = "quota_exceeded"
	codeNotFound      = "not_found"
	codeNotStorage    = "not_storage"
	codeInternal      = "internal"
)

// header is the CBOR form of every backup message: a map whose keys are
// the field numbers below, each present only in the types that use it.
type header struct {
	Type    uint8    `cbor:"1,keyasint"`
	CID     []byte   `cbor:"2,keyasint,omitempty"`
	Kind    uint8    `cbor:"3,keyasint,omitempty"`
	User    []byte   `cbor:"4,keyasint,omitempty"`
	Device  []byte   `cbor:"5,keyasint,omitempty"`
	Time    int64    `cbor:"6,keyasint,omitempty"`
	Sig     []byte   `cbor:"7,keyasint,omitempty"`
	Entry   string   `cbor:"8,keyasint,omitempty"`
	CIDs    [][]byte `cbor:"9,keyasint,omitempty"`
	Held    []byte   `cbor:"10,keyasint,omitempty"`
	New     bool     `cbor:"11,keyasint,omitempty"`
	Code    string   `cbor:"12,keyasint,omitempty"`
	Message string   `cbor:"13,keyasint,omitempty"`
}

// Errors of the protocol.
var (
	// ErrBadFrame reports a message that does not decode or breaks a limit.
	ErrBadFrame = errors.New("backupstore: bad protocol message")
	// ErrRemote reports an error reply from a storage node.
	ErrRemote = errors.New("backupstore: storage node refused")
)

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = wire.StrictDecMode(MaxHasBatch)
)

func badFrame(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, a...))
}

// authorization is an upload authorization with the peer ID of the node
// the device signed it for.
type authorization struct {
	wire.UploadAuth
	Entry string
}

func (a authorization) put(h *header) {
	h.User, h.Device, h.Time, h.Sig, h.Entry = a.User.Bytes(), a.Device.Bytes(), a.Time.Unix(), a.Signature, a.Entry
}

// request is a decoded, checked request header.
type request struct {
	Type uint8
	CID  cid.Cid
	Kind uint8
	Auth authorization
	CIDs []cid.Cid
}

// decodeRequest decodes a request header and checks the fields of its type.
func decodeRequest(b []byte) (request, error) {
	if len(b) > MaxHeaderSize {
		return request{}, badFrame("header of %d bytes, limit %d", len(b), MaxHeaderSize)
	}
	var h header
	if err := decMode.Unmarshal(b, &h); err != nil {
		return request{}, badFrame("%v", err)
	}
	if h.Held != nil || h.New || h.Code != "" || h.Message != "" {
		return request{}, badFrame("request with reply fields")
	}
	r := request{Type: h.Type}
	hasAuth := h.User != nil || h.Device != nil || h.Time != 0 || h.Sig != nil || h.Entry != ""
	switch h.Type {
	case msgStore, msgReplicate, msgRelease:
		if h.CIDs != nil {
			return request{}, badFrame("type %d: unexpected fields", h.Type)
		}
		c, err := wire.ChunkCIDFromBytes(h.CID)
		if err != nil {
			return request{}, badFrame("%v", err)
		}
		r.CID = c
		if h.Type == msgRelease {
			if h.Kind != 0 {
				return request{}, badFrame("release: unexpected kind")
			}
		} else if h.Kind != kindChunk && h.Kind != kindManifest {
			return request{}, badFrame("unknown kind %d", h.Kind)
		}
		r.Kind = h.Kind
		if r.Auth, err = decodeAuth(h); err != nil {
			return request{}, err
		}
	case msgGet:
		if hasAuth || h.CIDs != nil || h.Kind != 0 {
			return request{}, badFrame("get: unexpected fields")
		}
		c, err := wire.ChunkCIDFromBytes(h.CID)
		if err != nil {
			return request{}, badFrame("%v", err)
		}
		r.CID = c
	case msgHas:
		if hasAuth || h.CID != nil || h.Kind != 0 {
			return request{}, badFrame("has: unexpected fields")
		}
		if len(h.CIDs) == 0 || len(h.CIDs) > MaxHasBatch {
			return request{}, badFrame("has: %d CIDs, want 1 to %d", len(h.CIDs), MaxHasBatch)
		}
		r.CIDs = make([]cid.Cid, len(h.CIDs))
		for i, b := range h.CIDs {
			c, err := wire.ChunkCIDFromBytes(b)
			if err != nil {
				return request{}, badFrame("has: CID %d: %v", i, err)
			}
			r.CIDs[i] = c
		}
	default:
		return request{}, badFrame("unknown request type %d", h.Type)
	}
	return r, nil
}

func decodeAuth(h header) (authorization, error) {
	user, err := ident.UserIDFromBytes(h.User)
	if err != nil {
		return authorization{}, badFrame("user: %v", err)
	}
	dev, err := ident.DeviceIDFromBytes(h.Device)
	if err != nil {
		return authorization{}, badFrame("device: %v", err)
	}
	if len(h.Sig) != ident.SignatureSize {
		return authorization{}, badFrame("signature of %d bytes", len(h.Sig))
	}
	if h.Entry == "" || len(h.Entry) > maxPeerIDLen {
		return authorization{}, badFrame("entry peer ID of %d bytes", len(h.Entry))
	}
	if h.Time <= 0 || h.Time > 1<<40 {
		return authorization{}, badFrame("time %d out of range", h.Time)
	}
	return authorization{
		UploadAuth: wire.UploadAuth{User: user, Device: dev, Time: time.Unix(h.Time, 0).UTC(), Signature: h.Sig},
		Entry:      h.Entry,
	}, nil
}

// reply is a decoded, checked reply header.
type reply struct {
	Type    uint8
	New     bool
	Held    []bool
	Code    string
	Message string
}

// decodeReply decodes a reply header and checks the fields of its type.
func decodeReply(b []byte) (reply, error) {
	if len(b) > MaxHeaderSize {
		return reply{}, badFrame("header of %d bytes, limit %d", len(b), MaxHeaderSize)
	}
	var h header
	if err := decMode.Unmarshal(b, &h); err != nil {
		return reply{}, badFrame("%v", err)
	}
	if h.CID != nil || h.Kind != 0 || h.User != nil || h.Device != nil || h.Time != 0 || h.Sig != nil || h.Entry != "" || h.CIDs != nil {
		return reply{}, badFrame("reply with request fields")
	}
	r := reply{Type: h.Type, New: h.New}
	switch h.Type {
	case msgOK, msgChunk:
		if h.Held != nil || h.Code != "" || h.Message != "" || (h.Type == msgChunk && h.New) {
			return reply{}, badFrame("type %d: unexpected fields", h.Type)
		}
	case msgHasResult:
		if h.New || h.Code != "" || h.Message != "" || len(h.Held) == 0 || len(h.Held) > MaxHasBatch {
			return reply{}, badFrame("has result: bad fields")
		}
		r.Held = make([]bool, len(h.Held))
		for i, v := range h.Held {
			if v > 1 {
				return reply{}, badFrame("has result: value %d", v)
			}
			r.Held[i] = v == 1
		}
	case msgError:
		if h.New || h.Held != nil || h.Code == "" || len(h.Message) > maxErrorMessage {
			return reply{}, badFrame("error: needs a code and at most a message")
		}
		r.Code, r.Message = h.Code, h.Message
	default:
		return reply{}, badFrame("unknown reply type %d", h.Type)
	}
	return r, nil
}

// framing is the backup protocol's length-prefixed framing.
var framing = service.Framing{Name: "backupstore", BadFrame: ErrBadFrame}

// writeMessage writes h with its length prefix and, when body is not nil,
// the body with its own.
func writeMessage(w io.Writer, h header, body []byte) error {
	b, err := encMode.Marshal(h)
	if err != nil {
		return err
	}
	if len(b) > MaxHeaderSize {
		return badFrame("header of %d bytes, limit %d", len(b), MaxHeaderSize)
	}
	buf := service.AppendFrame(make([]byte, 0, len(b)+2*binary.MaxVarintLen32), b)
	if body != nil {
		buf = binary.AppendUvarint(buf, uint64(len(body)))
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if body != nil {
		_, err = w.Write(body)
	}
	return err
}

// readPart reads one length-prefixed part of at most limit bytes.
func readPart(r *bufio.Reader, limit int) ([]byte, error) { return framing.Read(r, limit, nil) }

// readPartInto is readPart into a buffer from alloc.
func readPartInto(r *bufio.Reader, limit int, alloc func(n int) []byte) ([]byte, error) {
	return framing.Read(r, limit, alloc)
}

// Kind is the reply's message type.
func (r reply) Kind() uint8 { return r.Type }

// Refusal is the code and message of an error reply.
func (r reply) Refusal() (code, message string, ok bool) {
	return r.Code, r.Message, r.Type == msgError
}

// roundTrip sends one request to storage node p and reads its reply, which
// must be of type want or an error; the reply's chunk is returned for get.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, h header, body []byte, want uint8) (reply, []byte, error) {
	var chunk []byte
	r, err := s.client.RoundTrip(ctx, p, func(w io.Writer) error { return writeMessage(w, h, body) }, want,
		func(br *bufio.Reader, r reply) error {
			if !hasBody(r.Type) {
				return nil
			}
			var err error
			if chunk, err = readPart(br, wire.MaxChunkSize); err != nil {
				return fmt.Errorf("backupstore: read chunk from %s: %w", p, err)
			}
			return nil
		})
	if err != nil {
		return reply{}, nil, err
	}
	return r, chunk, nil
}

// errorCodes are the error replies callers branch on.
var errorCodes = service.Codes{
	{Code: codeQuotaExceeded, Err: ErrQuotaExceeded},
	{Code: codeUnauth, Err: ErrUnauthenticated},
	{Code: codeBadChunk, Err: wire.ErrBadChunk},
	{Code: codeNotFound, Err: ErrNotFound},
	{Code: codeNotStorage, Err: ErrNotStorage},
}

// remoteError maps an error reply to the error callers branch on.
func remoteError(p peer.ID, code, msg string) error {
	base, ok := errorCodes.ErrOf(code)
	if !ok {
		base = ErrRemote
	}
	return fmt.Errorf("%w: storage node %s: %s: %s", base, p, code, msg)
}

// codeOf maps an error of a request to its wire code.
func codeOf(err error) string {
	if c, ok := errorCodes.CodeOf(err); ok {
		return c
	}
	if errors.Is(err, ErrBadFrame) {
		return codeBadRequest
	}
	return codeInternal
}

// hasBody reports whether a message of type t carries a chunk.
func hasBody(t uint8) bool { return t == msgStore || t == msgReplicate || t == msgChunk }
