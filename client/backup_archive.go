package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/ident"
)

// The backup archive is the plaintext a backup holds, before compression
// and encryption (docs/protocol.md, "Backup archive"). It is a stream of
// records, each a 4-byte big-endian length and that many bytes of
// deterministic CBOR {1: kind, 2: body}, in this order:
//
//	header    once   {1: version, 2: user, 3: device that made it, 4: created ms}
//	setting   0..n   {1: name, 2: value}, names ascending
//	contact   0..n   {1: user}, user IDs ascending (bytes)
//	messages  0..n   {1: peer, 2: [device, ...], 3: [message, ...]}
//	end       once   {1: settings, 2: contacts, 3: messages} (the counts)
//
// A messages record holds 1..MaxArchiveBatch messages of the conversation
// with peer, each the array [device index, seq, sent ms, received ms,
// text, outgoing]: the sending device is an index into the record's list
// of devices (distinct, at most MaxArchiveDevices), and the sender is the
// archive's user when outgoing, else the peer. Conversations come one
// after the other (peers ascending), each in its history order. Nothing
// may follow the end record. The archive holds no device key and no
// session state: a backup is restored on a device with its own keys.
const (
	// ArchiveVersion is the archive format this client writes and reads.
	ArchiveVersion = 1
	// MaxArchiveRecordSize bounds one record: a batch of messages is cut
	// at archiveBatchBytes, so one message of MaxTextSize always fits.
	MaxArchiveRecordSize = 1 << 20
	// MaxArchiveBatch bounds the messages of one messages record, and
	// MaxArchiveDevices its sending devices.
	MaxArchiveBatch   = 1024
	MaxArchiveDevices = 256
	// MaxArchiveSettings bounds the settings of an archive, and
	// MaxSettingNameSize and MaxSettingValueSize one setting.
	MaxArchiveSettings  = 64
	MaxSettingNameSize  = 64
	MaxSettingValueSize = 4096
	// MaxArchiveContacts bounds the contacts of an archive.
	MaxArchiveContacts = 1 << 20

	// archiveBatchBytes is the encoded size after which the writer ends a
	// messages record.
	archiveBatchBytes = 256 << 10
	// archiveRecordHeader is the length prefix of a record.
	archiveRecordHeader = 4

	// Upper bounds of the encoded size, for the quota preflight: the
	// header, settings and end records; what each conversation adds
	// (contact record, a messages record's framing and peer); what each
	// message adds to its text (its array, and its device in the record's
	// list at worst); and the framing of a record cut every
	// archiveBatchBytes.
	archiveFixedOverhead   = 16 << 10
	archiveContactOverhead = 128
	archiveMessageOverhead = 80
)

// Archive record kinds.
const (
	archiveKindHeader   = 1
	archiveKindSetting  = 2
	archiveKindContact  = 3
	archiveKindMessages = 4
	archiveKindEnd      = 5
)

// SettingNode is the setting naming the node a device talks to.
const SettingNode = "node"

// ErrBadArchive reports an archive that does not decode or breaks the
// format's rules. A backup that decrypts (the password was right and no
// byte changed) never gives it, except from a client with a bug.
var ErrBadArchive = errors.New("client: bad backup archive")

// Archive is a decoded backup archive.
type Archive struct {
	User    ident.UserID
	Device  ident.DeviceID // the device that made the backup
	Created time.Time
	// Settings are the home's non-secret settings (SettingNode, ...).
	Settings map[string]string
	// Contacts are the peers of the user's conversations, ascending.
	Contacts []ident.UserID
	// History holds each conversation's messages in their history order.
	History map[ident.UserID][]ChatMessage
	// Messages is the number of messages in History.
	Messages int
}

type archiveRecord struct {
	Kind uint64          `cbor:"1,keyasint"`
	Body cbor.RawMessage `cbor:"2,keyasint"`
}

type archiveHeader struct {
	Version uint64 `cbor:"1,keyasint"`
	User    []byte `cbor:"2,keyasint"`
	Device  []byte `cbor:"3,keyasint"`
	Created int64  `cbor:"4,keyasint"`
}

type archiveSetting struct {
	Name  string `cbor:"1,keyasint"`
	Value string `cbor:"2,keyasint"`
}

type archiveContact struct {
	User []byte `cbor:"1,keyasint"`
}

type archiveMessages struct {
	Peer     []byte           `cbor:"1,keyasint"`
	Devices  [][]byte         `cbor:"2,keyasint"`
	Messages []archiveMessage `cbor:"3,keyasint"`
}

type archiveMessage struct {
	_        struct{} `cbor:",toarray"`
	Device   uint64
	Seq      uint64
	Sent     int64
	Received int64
	Text     string
	Outgoing bool
}

type archiveEnd struct {
	Settings uint64 `cbor:"1,keyasint"`
	Contacts uint64 `cbor:"2,keyasint"`
	Messages uint64 `cbor:"3,keyasint"`
}

// archiveWriter writes an archive record by record; it holds at most one
// batch of messages.
type archiveWriter struct {
	w        io.Writer
	user     ident.UserID
	stage    int // kind of the last record written
	lastKey  []byte
	peer     ident.UserID // of the batch
	devices  map[ident.DeviceID]uint64
	batch    archiveMessages
	batchLen int
	counts   archiveEnd
	buf      []byte
}

func newArchiveWriter(w io.Writer, user ident.UserID, device ident.DeviceID, created time.Time) (*archiveWriter, error) {
	aw := &archiveWriter{w: w, user: user}
	err := aw.record(archiveKindHeader, archiveHeader{
		Version: ArchiveVersion, User: user.Bytes(), Device: device.Bytes(), Created: created.UnixMilli(),
	})
	return aw, err
}

// record writes one record: its length, then {1: kind, 2: body}. The
// deterministic encoding of a two-pair map with keys 1 and 2 and a kind
// under 24 is the bytes a2 01 <kind> 02 followed by the body's encoding.
func (aw *archiveWriter) record(kind int, body any) error {
	b, err := storeEnc.Marshal(body)
	if err != nil {
		return fmt.Errorf("client: encode archive record: %w", err)
	}
	n := 4 + len(b)
	if n > MaxArchiveRecordSize {
		return fmt.Errorf("client: archive record of %d bytes, limit %d", n, MaxArchiveRecordSize)
	}
	aw.buf = binary.BigEndian.AppendUint32(aw.buf[:0], uint32(n))
	aw.buf = append(aw.buf, 0xa2, 0x01, byte(kind), 0x02)
	aw.buf = append(aw.buf, b...)
	if _, err := aw.w.Write(aw.buf); err != nil {
		return fmt.Errorf("client: write archive: %w", err)
	}
	aw.stage = kind
	return nil
}

// ordered checks that records of kind come in the format's order, and
// keys of settings and contacts ascending.
func (aw *archiveWriter) ordered(kind int, key []byte) error {
	if aw.stage > kind || (aw.stage == kind && key != nil && bytes.Compare(aw.lastKey, key) >= 0) {
		return fmt.Errorf("client: archive record of kind %d out of order", kind)
	}
	aw.lastKey = key
	return nil
}

func (aw *archiveWriter) setting(name, value string) error {
	if len(name) == 0 || len(name) > MaxSettingNameSize || len(value) > MaxSettingValueSize {
		return fmt.Errorf("client: setting %q too long", name)
	}
	if err := aw.ordered(archiveKindSetting, []byte(name)); err != nil {
		return err
	}
	aw.counts.Settings++
	return aw.record(archiveKindSetting, archiveSetting{Name: name, Value: value})
}

func (aw *archiveWriter) contact(u ident.UserID) error {
	if err := aw.ordered(archiveKindContact, u.Bytes()); err != nil {
		return err
	}
	aw.counts.Contacts++
	return aw.record(archiveKindContact, archiveContact{User: u.Bytes()})
}

// message adds m to the current batch, writing the batch when it is full
// or m is of another conversation. Messages of one conversation must come
// together.
func (aw *archiveWriter) message(m ChatMessage) error {
	if aw.stage > archiveKindMessages {
		return errors.New("client: archive message after the end")
	}
	if m.Outgoing != m.From.Equal(aw.user) || (!m.Outgoing && !m.From.Equal(m.Peer)) {
		return fmt.Errorf("client: archive: message %s/%d of %s in the conversation with %s", m.Device, m.Seq, m.From, m.Peer)
	}
	if !m.Peer.Equal(aw.peer) || len(aw.devices) == MaxArchiveDevices && !aw.hasDevice(m.Device) {
		if err := aw.flush(); err != nil {
			return err
		}
		aw.peer = m.Peer
	}
	if aw.devices == nil {
		aw.devices = map[ident.DeviceID]uint64{}
	}
	d, ok := aw.devices[m.Device]
	if !ok {
		d = uint64(len(aw.batch.Devices))
		aw.devices[m.Device] = d
		aw.batch.Devices = append(aw.batch.Devices, m.Device.Bytes())
	}
	text := m.Text
	if !utf8.ValidString(text) {
		// Only a text this device sent itself can be invalid UTF-8 (what
		// arrives is checked); the archive must stay readable.
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	aw.batch.Messages = append(aw.batch.Messages, archiveMessage{
		Device: d, Seq: m.Seq, Sent: m.Sent.UnixMilli(), Received: m.Received.UnixMilli(), Text: text, Outgoing: m.Outgoing,
	})
	aw.batchLen += len(m.Text) + 32
	aw.counts.Messages++
	if len(aw.batch.Messages) == MaxArchiveBatch || aw.batchLen >= archiveBatchBytes {
		return aw.flush()
	}
	return nil
}

func (aw *archiveWriter) hasDevice(d ident.DeviceID) bool {
	_, ok := aw.devices[d]
	return ok
}

func (aw *archiveWriter) flush() error {
	if len(aw.batch.Messages) == 0 {
		return nil
	}
	aw.batch.Peer = aw.peer.Bytes()
	err := aw.record(archiveKindMessages, aw.batch)
	clear(aw.batch.Messages)
	aw.batch = archiveMessages{Messages: aw.batch.Messages[:0]}
	clear(aw.devices)
	aw.batchLen = 0
	return err
}

// close writes the last batch and the end record.
func (aw *archiveWriter) close() error {
	if err := aw.flush(); err != nil {
		return err
	}
	return aw.record(archiveKindEnd, aw.counts)
}
