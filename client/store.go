package client

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// The chat store: an append-only log in the home, every record encrypted
// with the key derived from the passphrase (e2ee backup encryption, a fresh
// nonce prefix per record). Each record is a batch of changes (history
// entries, sender and receiver session states, the device's message
// sequence) written with one fsync; replaying the log rebuilds the state.
const (
	// ChatLogFile is the chat store's file in the home.
	ChatLogFile = "chat.log"
	// MaxChatRecordSize bounds one encrypted record of the log (a batch of
	// up to a deliver frame of messages of the largest size).
	MaxChatRecordSize = 64 << 20
	// ChatCompactSize is the log size past which it is compacted: written
	// afresh (chatLog.rewrite), dropping superseded session states. A log
	// is compacted only once it has also grown to ChatCompactGrowth times
	// its size after the last rewrite (or at opening), so a long history
	// is not written again for every message: the bytes written by
	// compactions stay proportional to the bytes appended.
	ChatCompactSize   = 16 << 20
	ChatCompactGrowth = 2
	// rewriteRecordBytes is the plaintext size after which a rewrite ends
	// a record of history, well under MaxChatRecordSize.
	rewriteRecordBytes = 8 << 20
	// chatRecordHeader is the length prefix of a record.
	chatRecordHeader = 4
	// chatFrameOverhead bounds what the e2ee backup stream adds to each
	// frame of a record (frame header and tag).
	chatFrameOverhead = 64
)

// ChatMessage is one message of a conversation's local history.
type ChatMessage struct {
	// Peer is the other user of the conversation.
	Peer ident.UserID
	// From and Device are the sending user and device.
	From   ident.UserID
	Device ident.DeviceID
	// Seq is the sending device's sequence number of the message; a
	// conversation's history keeps each device's messages in Seq order.
	Seq uint64
	// Sent is the sender's clock, Received this device's.
	Sent, Received time.Time
	Text           string
	// Outgoing marks a message of this user (from this or another own device).
	Outgoing bool
	// Local numbers the messages in the order they entered this device's
	// history (1, 2, ...; 0 for messages restored from a backup and not yet
	// numbered): what "unseen" and "newest" are measured by.
	Local uint64
	// State is where an outgoing message is (StateSent for incoming ones).
	State MessageState
	// Failure says why a message is StateFailed.
	Failure string
}

// MessageState is the fate of an outgoing message.
type MessageState uint8

// The states of an outgoing message. The zero value is StateSent so that
// messages from before the states were kept (and incoming ones) read as sent.
const (
	// StateSent: the recipients' relays hold it (or it came from another
	// of this user's devices, which sent it).
	StateSent MessageState = iota
	// StatePending: in this device's outbox, not yet held by the relays;
	// it is sent (again) whenever the device is connected.
	StatePending
	// StateDelivered: a device of the recipient confirmed it received it.
	StateDelivered
	// StateFailed: refused for good (Failure says why); never resent.
	StateFailed
)

func (s MessageState) String() string {
	switch s {
	case StateSent:
		return "sent"
	case StatePending:
		return "pending"
	case StateDelivered:
		return "delivered"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// advance reports whether a message in state s may move to next: pending
// moves to anything, sent and failed only to delivered.
func (s MessageState) advance(next MessageState) bool {
	switch s {
	case StatePending:
		return next != StatePending
	case StateSent, StateFailed:
		return next == StateDelivered
	}
	return false
}

type chatMessageWire struct {
	Peer     []byte `cbor:"1,keyasint"`
	From     []byte `cbor:"2,keyasint"`
	Device   []byte `cbor:"3,keyasint"`
	Seq      uint64 `cbor:"4,keyasint"`
	Sent     int64  `cbor:"5,keyasint"`
	Received int64  `cbor:"6,keyasint"`
	Text     string `cbor:"7,keyasint"`
	Outgoing bool   `cbor:"8,keyasint,omitempty"`
	Local    uint64 `cbor:"9,keyasint,omitempty"`
	State    uint8  `cbor:"10,keyasint,omitempty"`
	Failure  string `cbor:"11,keyasint,omitempty"`
}

// outboxWire is a message (or receipt) of this device sealed for its
// recipients: the envelopes are sent again, byte for byte, until the
// relays hold them (the same envelope IDs: relays and receivers drop
// copies).
type outboxWire struct {
	Seq       uint64   `cbor:"1,keyasint"`
	Peer      []byte   `cbor:"2,keyasint"`
	Envelopes [][]byte `cbor:"3,keyasint"`
	Kinds     []uint8  `cbor:"4,keyasint"`
	Receipt   bool     `cbor:"5,keyasint,omitempty"`
}

// doneWire ends this device's outbox entry Seq: the message moves to State.
type doneWire struct {
	Seq     uint64 `cbor:"1,keyasint"`
	Peer    []byte `cbor:"2,keyasint"`
	State   uint8  `cbor:"3,keyasint"`
	Failure string `cbor:"4,keyasint,omitempty"`
}

// msgRefWire names a message of a conversation: the peer, the sending
// device and its sequence number.
type msgRefWire struct {
	Peer   []byte `cbor:"1,keyasint"`
	Device []byte `cbor:"2,keyasint"`
	Seq    uint64 `cbor:"3,keyasint"`
}

// seenWire marks every message of the conversation with Peer up to Local
// as seen by the user.
type seenWire struct {
	Peer  []byte `cbor:"1,keyasint"`
	Local uint64 `cbor:"2,keyasint"`
}

type senderStateWire struct {
	Peer  []byte `cbor:"1,keyasint"`
	State []byte `cbor:"2,keyasint,omitempty"` // nil: no session (renew before the next message)
}

// chatRecord is one record of the log: the changes of one batch.
type chatRecord struct {
	History   []chatMessageWire `cbor:"1,keyasint,omitempty"`
	Senders   []senderStateWire `cbor:"2,keyasint,omitempty"`
	Receivers [][]byte          `cbor:"3,keyasint,omitempty"` // e2ee.ReceiverSession.MarshalBinary
	Seq       uint64            `cbor:"4,keyasint,omitempty"` // the next sequence number of this device
	Outbox    []outboxWire      `cbor:"5,keyasint,omitempty"`
	Done      []doneWire        `cbor:"6,keyasint,omitempty"`
	Delivered []msgRefWire      `cbor:"7,keyasint,omitempty"`
	Seen      []seenWire        `cbor:"8,keyasint,omitempty"`
	Pins      []pinWire         `cbor:"9,keyasint,omitempty"`
	Delivery  []deliveryWire    `cbor:"10,keyasint,omitempty"`
}

// pinWire is the chain of a user this device verified and pinned: the
// user ID and the chain's links, genesis first (a later pin of the same
// user replaces it).
type pinWire struct {
	User  []byte   `cbor:"1,keyasint"`
	Links [][]byte `cbor:"2,keyasint"`
}

// deliveryWire is the delivery key of a device, learnt from its messages.
type deliveryWire struct {
	Device []byte `cbor:"1,keyasint"`
	Key    []byte `cbor:"2,keyasint"`
}

var (
	storeEnc cbor.EncMode
	storeDec cbor.DecMode
)

func init() {
	var err error
	if storeEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	storeDec, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   6,
		MaxArrayElements:  1 << 20,
		MaxMapPairs:       16,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// chatState is what the log rebuilds.
type chatState struct {
	history   map[ident.UserID][]ChatMessage
	senders   map[ident.UserID]*e2ee.SenderSession
	receivers map[receiverKey]*e2ee.ReceiverSession
	seq       uint64
	// local is the last Local number given to a message.
	local uint64
	// seen is, per conversation, the Local number up to which the user
	// has seen its messages.
	seen map[ident.UserID]uint64
	// outbox holds this device's sealed entries by sequence number;
	// queue is what waits to be sent (pending messages, sealed or not,
	// and sealed receipts), in sequence order.
	outbox map[uint64]*outboxEntry
	queue  []queued
	// pins holds the chains of other users this device verified: a chain
	// a node serves must be the pinned one or extend it (Chat.chain).
	pins map[ident.UserID]pin
	// delivery is the delivery key of each device that gave one.
	delivery map[ident.DeviceID][]byte
}

// pin is a pinned chain, verified, and its links.
type pin struct {
	set   ident.DeviceSet
	links [][]byte
}

// outboxEntry is a sealed message or receipt waiting for the relays.
type outboxEntry struct {
	peer    ident.UserID
	seq     uint64
	envs    []wire.Envelope
	kinds   []e2ee.EnvelopeKind
	receipt bool
}

// queued is one thing waiting to be sent: the message (or receipt) of
// this device with sequence number seq in the conversation with peer.
type queued struct {
	peer    ident.UserID
	seq     uint64
	receipt bool
}

type receiverKey struct {
	sender  ident.DeviceID
	session e2ee.SessionID
}

func newChatState() *chatState {
	return &chatState{
		history:   map[ident.UserID][]ChatMessage{},
		senders:   map[ident.UserID]*e2ee.SenderSession{},
		receivers: map[receiverKey]*e2ee.ReceiverSession{},
		seen:      map[ident.UserID]uint64{},
		outbox:    map[uint64]*outboxEntry{},
		pins:      map[ident.UserID]pin{},
		delivery:  map[ident.DeviceID][]byte{},
	}
}

// insert adds m to its conversation's history after every message of the
// same device with a lower or equal Seq, so each device's messages stay
// in order even when they arrive out of order, and inserting a history's
// messages in its order gives the same history (two different messages
// with one Seq, as a restore may keep, stay in the order they came).
func (s *chatState) insert(m ChatMessage) {
	h := s.history[m.Peer]
	at := len(h)
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Device.Equal(m.Device) {
			if h[i].Seq <= m.Seq {
				break
			}
			at = i
		}
	}
	h = append(h, ChatMessage{})
	copy(h[at+1:], h[at:])
	h[at] = m
	s.history[m.Peer] = h
}

func encodeChatMessage(m ChatMessage) chatMessageWire {
	return chatMessageWire{
		Peer: m.Peer.Bytes(), From: m.From.Bytes(), Device: m.Device.Bytes(), Seq: m.Seq,
		Sent: m.Sent.UnixMilli(), Received: m.Received.UnixMilli(), Text: m.Text, Outgoing: m.Outgoing,
		Local: m.Local, State: uint8(m.State), Failure: m.Failure,
	}
}

func decodeChatMessage(w chatMessageWire) (ChatMessage, error) {
	peer, err := ident.UserIDFromBytes(w.Peer)
	if err != nil {
		return ChatMessage{}, err
	}
	from, err := ident.UserIDFromBytes(w.From)
	if err != nil {
		return ChatMessage{}, err
	}
	dev, err := ident.DeviceIDFromBytes(w.Device)
	if err != nil {
		return ChatMessage{}, err
	}
	return ChatMessage{
		Peer: peer, From: from, Device: dev, Seq: w.Seq,
		Sent: time.UnixMilli(w.Sent).UTC(), Received: time.UnixMilli(w.Received).UTC(),
		Text: w.Text, Outgoing: w.Outgoing, Local: w.Local, State: MessageState(w.State), Failure: w.Failure,
	}, nil
}

// decodeChatRecord decodes the plaintext of one record.
func decodeChatRecord(b []byte) (chatRecord, error) {
	var r chatRecord
	if err := storeDec.Unmarshal(b, &r); err != nil {
		return chatRecord{}, err
	}
	return r, nil
}

// apply replays one record onto s.
func (s *chatState) apply(r chatRecord) error {
	for _, w := range r.History {
		m, err := decodeChatMessage(w)
		if err != nil {
			return fmt.Errorf("history entry: %w", err)
		}
		if m.State > StateFailed {
			return fmt.Errorf("history entry: state %d", m.State)
		}
		if m.Local == 0 {
			// From a log of before the numbering, or restored from a
			// backup: number it, and count it as seen.
			s.local++
			m.Local = s.local
			s.seen[m.Peer] = max(s.seen[m.Peer], m.Local)
		}
		s.local = max(s.local, m.Local)
		s.insert(m)
		if m.State == StatePending {
			s.enqueue(queued{peer: m.Peer, seq: m.Seq})
		}
	}
	for _, w := range r.Senders {
		peer, err := ident.UserIDFromBytes(w.Peer)
		if err != nil {
			return fmt.Errorf("sender session: %w", err)
		}
		if w.State == nil {
			delete(s.senders, peer)
			continue
		}
		ss, err := e2ee.UnmarshalSenderSession(w.State)
		if err != nil {
			return fmt.Errorf("sender session: %w", err)
		}
		s.senders[peer] = ss
	}
	for _, b := range r.Receivers {
		rs, err := e2ee.UnmarshalReceiverSession(b)
		if err != nil {
			return fmt.Errorf("receiver session: %w", err)
		}
		s.receivers[receiverKey{rs.Sender(), rs.ID()}] = rs
	}
	if r.Seq > s.seq {
		s.seq = r.Seq
	}
	for _, w := range r.Outbox {
		e, err := decodeOutboxEntry(w)
		if err != nil {
			return fmt.Errorf("outbox entry: %w", err)
		}
		s.outbox[e.seq] = e
		if e.receipt {
			s.enqueue(queued{peer: e.peer, seq: e.seq, receipt: true})
		}
	}
	for _, w := range r.Done {
		peer, err := ident.UserIDFromBytes(w.Peer)
		if err != nil {
			return fmt.Errorf("outbox end: %w", err)
		}
		if MessageState(w.State) > StateFailed {
			return fmt.Errorf("outbox end: state %d", w.State)
		}
		delete(s.outbox, w.Seq)
		s.queue = slices.DeleteFunc(s.queue, func(q queued) bool { return q.seq == w.Seq })
		s.setState(peer, func(m *ChatMessage) bool {
			return m.Outgoing && m.Seq == w.Seq && m.State == StatePending
		}, MessageState(w.State), w.Failure)
	}
	for _, w := range r.Delivered {
		peer, err := ident.UserIDFromBytes(w.Peer)
		if err != nil {
			return fmt.Errorf("receipt: %w", err)
		}
		dev, err := ident.DeviceIDFromBytes(w.Device)
		if err != nil {
			return fmt.Errorf("receipt: %w", err)
		}
		s.setState(peer, func(m *ChatMessage) bool {
			return m.Outgoing && m.Seq == w.Seq && m.Device.Equal(dev)
		}, StateDelivered, "")
	}
	for _, w := range r.Seen {
		peer, err := ident.UserIDFromBytes(w.Peer)
		if err != nil {
			return fmt.Errorf("seen mark: %w", err)
		}
		s.seen[peer] = max(s.seen[peer], w.Local)
	}
	for _, w := range r.Pins {
		p, err := decodePin(w)
		if err != nil {
			return fmt.Errorf("pinned chain: %w", err)
		}
		s.pins[p.set.User()] = p
	}
	for _, w := range r.Delivery {
		dev, err := ident.DeviceIDFromBytes(w.Device)
		if err != nil {
			return fmt.Errorf("delivery key: %w", err)
		}
		if len(w.Key) != wire.DeliveryVerifierSize {
			return fmt.Errorf("delivery key of %d bytes", len(w.Key))
		}
		s.delivery[dev] = w.Key
	}
	return nil
}

// decodePin verifies a pinned chain from its user ID.
func decodePin(w pinWire) (pin, error) {
	user, err := ident.UserIDFromBytes(w.User)
	if err != nil {
		return pin{}, err
	}
	set, _, err := ident.DecodeChain(user, w.Links)
	if err != nil {
		return pin{}, err
	}
	return pin{set: set, links: w.Links}, nil
}

// enqueue adds q to the send queue, keeping it in sequence order.
func (s *chatState) enqueue(q queued) {
	i, found := slices.BinarySearchFunc(s.queue, q.seq, func(a queued, seq uint64) int { return cmp.Compare(a.seq, seq) })
	if !found {
		s.queue = slices.Insert(s.queue, i, q)
	}
}

// setState moves the first message of the conversation with peer that
// match accepts to state next, if its state may advance to it.
func (s *chatState) setState(peer ident.UserID, match func(*ChatMessage) bool, next MessageState, failure string) {
	h := s.history[peer]
	for i := len(h) - 1; i >= 0; i-- {
		if match(&h[i]) {
			if h[i].State.advance(next) {
				h[i].State, h[i].Failure = next, failure
			}
			return
		}
	}
}

func encodeOutboxEntry(e *outboxEntry) (outboxWire, error) {
	w := outboxWire{Seq: e.seq, Peer: e.peer.Bytes(), Receipt: e.receipt}
	for i, env := range e.envs {
		b, err := env.Encode()
		if err != nil {
			return outboxWire{}, err
		}
		w.Envelopes = append(w.Envelopes, b)
		w.Kinds = append(w.Kinds, uint8(e.kinds[i]))
	}
	return w, nil
}

func decodeOutboxEntry(w outboxWire) (*outboxEntry, error) {
	peer, err := ident.UserIDFromBytes(w.Peer)
	if err != nil {
		return nil, err
	}
	if len(w.Kinds) != len(w.Envelopes) {
		return nil, fmt.Errorf("%d kinds for %d envelopes", len(w.Kinds), len(w.Envelopes))
	}
	e := &outboxEntry{peer: peer, seq: w.Seq, receipt: w.Receipt}
	for i, b := range w.Envelopes {
		env, err := wire.DecodeEnvelope(b)
		if err != nil {
			return nil, err
		}
		e.envs = append(e.envs, env)
		e.kinds = append(e.kinds, e2ee.EnvelopeKind(w.Kinds[i]))
	}
	return e, nil
}

// chatLog is the open log file.
type chatLog struct {
	path string
	fs   logFS
	f    logFile
	key  *e2ee.BackupKey
	// size is the length of the whole records of the log: the next record
	// is written there.
	size int64
	// base is the size after the last rewrite, or at opening.
	base int64
	// compactSize is the size past which the log may be compacted
	// (ChatCompactSize; tests make it smaller).
	compactSize int64
	// torn reports a write that failed: bytes past size may be on disk,
	// to cut before the next record is written.
	torn bool
}

// logFile is an open file of the chat log, as chatLog writes it.
type logFile interface {
	WriteAt(b []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

// logFS is what chatLog writes with: the operating system's files
// (osLogFS), or in tests files that stop at a chosen byte, to check what
// a crash there leaves on disk.
type logFS interface {
	// createTemp creates a new file of mode HomeFileMode in dir, named
	// from pattern as os.CreateTemp does.
	createTemp(dir, pattern string) (f logFile, name string, err error)
	rename(from, to string) error
	remove(name string) error
	// syncDir makes the renames and creations in dir durable.
	syncDir(dir string) error
}

type osLogFS struct{}

func (osLogFS) createTemp(dir, pattern string) (logFile, string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, "", err
	}
	if err := f.Chmod(HomeFileMode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, "", err
	}
	return f, f.Name(), nil
}

func (osLogFS) rename(from, to string) error { return os.Rename(from, to) }
func (osLogFS) remove(name string) error     { return os.Remove(name) }

func (osLogFS) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// chatLogTempPattern names the temporary file of a rewrite; one left by a
// crash is removed when the log is opened.
const chatLogTempPattern = "." + ChatLogFile + ".tmp-*"

// splitChatLog cuts the log's bytes into records. A record cut short at the
// end (a write interrupted by a crash, never acknowledged) ends the log:
// good is the length of the whole records before it.
func splitChatLog(data []byte) (records [][]byte, good int, err error) {
	for off := 0; off < len(data); {
		if len(data)-off < chatRecordHeader {
			return records, off, nil
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n == 0 || n > MaxChatRecordSize {
			return nil, 0, fmt.Errorf("record at %d: length %d", off, n)
		}
		if len(data)-off-chatRecordHeader < n {
			return records, off, nil
		}
		records = append(records, data[off+chatRecordHeader:off+chatRecordHeader+n])
		off += chatRecordHeader + n
		good = off
	}
	return records, good, nil
}

// openChatLog opens (creating) the log in dir and replays it with key.
func openChatLog(dir string, key *e2ee.BackupKey) (*chatLog, *chatState, error) {
	path := filepath.Join(dir, ChatLogFile)
	st := newChatState()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, HomeFileMode)
	if err != nil {
		return nil, nil, fmt.Errorf("client: chat store: %w", err)
	}
	fail := func(err error) (*chatLog, *chatState, error) { f.Close(); return nil, nil, err }
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("client: chat store: %w", err))
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fail(fmt.Errorf("%w: %s has mode %04o (run chmod 600 on it)", ErrHomePermissions, path, fi.Mode().Perm()))
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fail(fmt.Errorf("client: chat store: %w", err))
	}
	recs, good, err := splitChatLog(data)
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %w", ErrCorruptHome, ChatLogFile, err))
	}
	for i, sealed := range recs {
		pt, err := openChatRecord(sealed, key)
		if err != nil {
			return fail(fmt.Errorf("%w: %s record %d: %w", ErrCorruptHome, ChatLogFile, i, err))
		}
		r, err := decodeChatRecord(pt)
		if err == nil {
			err = st.apply(r)
		}
		if err != nil {
			return fail(fmt.Errorf("%w: %s record %d: %w", ErrCorruptHome, ChatLogFile, i, err))
		}
	}
	if good < len(data) {
		if err := f.Truncate(int64(good)); err != nil {
			return fail(fmt.Errorf("client: chat store: drop a torn record: %w", err))
		}
	}
	// A rewrite cut short by a crash leaves its temporary file: the log
	// is the old one (or the renamed new one), the file is garbage.
	if stray, err := filepath.Glob(filepath.Join(dir, chatLogTempPattern)); err == nil {
		for _, name := range stray {
			os.Remove(name)
		}
	}
	l := &chatLog{path: path, fs: osLogFS{}, f: f, key: key, size: int64(good), base: int64(good), compactSize: ChatCompactSize}
	if good == 0 {
		// A new log: its name must survive a crash with the first record.
		if err := l.fs.syncDir(dir); err != nil {
			return fail(fmt.Errorf("client: chat store: %w", err))
		}
	}
	return l, st, nil
}

func openChatRecord(sealed []byte, key *e2ee.BackupKey) ([]byte, error) {
	rd, err := e2ee.NewBackupReaderWithKey(bytes.NewReader(sealed), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(rd, MaxChatRecordSize))
}

func sealChatRecord(r chatRecord, key *e2ee.BackupKey) ([]byte, error) {
	pt, err := storeEnc.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("client: encode chat record: %w", err)
	}
	defer clear(pt)
	var buf bytes.Buffer
	frame := max(int(key.Params().ChunkSize), e2ee.MinBackupChunkSize)
	buf.Grow(chatRecordHeader + e2ee.BackupHeaderSize + len(pt) + (len(pt)/frame+1)*chatFrameOverhead)
	buf.Write(make([]byte, chatRecordHeader))
	w, err := e2ee.NewBackupWriterWithKey(&buf, key, nil)
	if err != nil {
		return nil, fmt.Errorf("client: encrypt chat record: %w", err)
	}
	if _, err := w.Write(pt); err != nil {
		return nil, fmt.Errorf("client: encrypt chat record: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("client: encrypt chat record: %w", err)
	}
	out := buf.Bytes()
	if len(out)-chatRecordHeader > MaxChatRecordSize {
		return nil, fmt.Errorf("client: chat record of %d bytes, limit %d", len(out)-chatRecordHeader, MaxChatRecordSize)
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-chatRecordHeader))
	return out, nil
}

// append writes one record at the end of the log and syncs it: when it
// returns nil the record survives a crash. When it fails, the log is as
// before: bytes of the record that reached the file are cut before the
// next record is written (and a crash leaves them as a torn last record,
// which opening drops).
func (l *chatLog) append(r chatRecord) error { return l.write(r, true) }

// appendLazy writes one record without waiting for the disk: the next
// synced append (or rewrite) makes it durable with itself. For records
// whose loss in a crash costs nothing but a repeat (the end of a send,
// which is then sent again; a delivery mark; a seen mark).
func (l *chatLog) appendLazy(r chatRecord) error { return l.write(r, false) }

func (l *chatLog) write(r chatRecord, sync bool) error {
	b, err := sealChatRecord(r, l.key)
	if err != nil {
		return err
	}
	if l.torn {
		if err := l.f.Truncate(l.size); err != nil {
			return fmt.Errorf("client: chat store: cut a failed write: %w", err)
		}
		l.torn = false
	}
	if _, err := l.f.WriteAt(b, l.size); err != nil {
		l.torn = true
		return fmt.Errorf("client: chat store: %w", err)
	}
	if sync {
		if err := l.f.Sync(); err != nil {
			l.torn = true
			return fmt.Errorf("client: chat store: %w", err)
		}
	}
	l.size += int64(len(b))
	return nil
}

// durable reports whether r must be on disk before its change takes
// effect: it holds messages, sealed envelopes, sender sessions (a
// message key must never be used twice) or pinned chains. Anything else may be lost in a
// crash at no cost but a repeat.
func (r chatRecord) durable() bool {
	return len(r.History) > 0 || len(r.Outbox) > 0 || len(r.Senders) > 0 || len(r.Pins) > 0
}

// rewrite replaces the log with records holding all of st: its history
// in records of about rewriteRecordBytes (sealed in parallel), then one
// record of the session states and the sequence number. Replaying the
// new log gives st. The new log is written to a temporary file, synced
// and renamed over the old one, so a crash leaves one or the other; the
// file renamed is the log from then on (appends go on in it).
//
// replaced reports that the new log took the old one's place, even if
// err is not nil (the directory could not be synced after the rename);
// when it is false, the log is as before.
func (l *chatLog) rewrite(st *chatState) (replaced bool, err error) {
	dir := filepath.Dir(l.path)
	tmp, name, err := l.fs.createTemp(dir, chatLogTempPattern)
	if err != nil {
		return false, fmt.Errorf("client: chat store: rewrite: %w", err)
	}
	defer func() {
		if !replaced {
			tmp.Close()
			l.fs.remove(name)
		}
	}()
	// Records are built here, sealed on several cores and written in
	// order: the history, then the session states and seen marks, then
	// the sealed outbox.
	var size int64
	err = orderedPipeline(pipelineWorkers(), func(emit func(chatRecord) error) error {
		var rec chatRecord
		n := 0
		for _, h := range st.history {
			for _, m := range h {
				rec.History = append(rec.History, encodeChatMessage(m))
				if n += len(m.Text) + 200; n >= rewriteRecordBytes {
					if err := emit(rec); err != nil {
						return err
					}
					rec, n = chatRecord{}, 0
				}
			}
		}
		if len(rec.History) > 0 {
			if err := emit(rec); err != nil {
				return err
			}
		}
		sessions, err := st.snapshotSessions()
		if err != nil {
			return err
		}
		if err := emit(sessions); err != nil {
			return err
		}
		// The sealed outbox entries, in records of about
		// rewriteRecordBytes, in sequence order.
		rec, n = chatRecord{}, 0
		for _, q := range st.queue {
			e, ok := st.outbox[q.seq]
			if !ok {
				continue
			}
			w, err := encodeOutboxEntry(e)
			if err != nil {
				return err
			}
			rec.Outbox = append(rec.Outbox, w)
			for _, b := range w.Envelopes {
				n += len(b)
			}
			if n >= rewriteRecordBytes {
				if err := emit(rec); err != nil {
					return err
				}
				rec, n = chatRecord{}, 0
			}
		}
		if len(rec.Outbox) > 0 {
			return emit(rec)
		}
		return nil
	}, func(r chatRecord) ([]byte, error) {
		return sealChatRecord(r, l.key)
	}, func(b []byte) error {
		if _, err := tmp.WriteAt(b, size); err != nil {
			return err
		}
		size += int64(len(b))
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("client: chat store: rewrite: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("client: chat store: rewrite: %w", err)
	}
	if err := l.fs.rename(name, l.path); err != nil {
		return false, fmt.Errorf("client: chat store: rewrite: %w", err)
	}
	l.f.Close()
	l.f, l.size, l.base, l.torn = tmp, size, size, false
	if err := l.fs.syncDir(dir); err != nil {
		return true, fmt.Errorf("client: chat store: rewrite: %w", err)
	}
	return true, nil
}

// needsCompaction reports whether the log has grown enough to be
// compacted (ChatCompactSize, ChatCompactGrowth).
func (l *chatLog) needsCompaction() bool {
	return l.size > max(l.compactSize, ChatCompactGrowth*l.base)
}

// compact writes the log afresh from st (rewrite): one record per
// rewriteRecordBytes of history, then the session states, so a history of
// any size compacts.
func (l *chatLog) compact(st *chatState) error {
	_, err := l.rewrite(st)
	return err
}

// snapshotSessions is a record of st's session states, sequence number
// and seen marks.
func (s *chatState) snapshotSessions() (chatRecord, error) {
	r := chatRecord{Seq: s.seq}
	for user, p := range s.pins {
		r.Pins = append(r.Pins, pinWire{User: user.Bytes(), Links: p.links})
	}
	for peer, l := range s.seen {
		r.Seen = append(r.Seen, seenWire{Peer: peer.Bytes(), Local: l})
	}
	for dev, key := range s.delivery {
		r.Delivery = append(r.Delivery, deliveryWire{Device: dev.Bytes(), Key: key})
	}
	for peer, ss := range s.senders {
		b, err := ss.MarshalBinary()
		if err != nil {
			return chatRecord{}, err
		}
		r.Senders = append(r.Senders, senderStateWire{Peer: peer.Bytes(), State: b})
	}
	for _, rs := range s.receivers {
		b, err := rs.MarshalBinary()
		if err != nil {
			return chatRecord{}, err
		}
		r.Receivers = append(r.Receivers, b)
	}
	return r, nil
}

func (l *chatLog) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if errors.Is(err, fs.ErrClosed) {
		return nil
	}
	return err
}
