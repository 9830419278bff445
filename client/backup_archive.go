package client

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/e2ee"
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
	User    e2ee.UserID
	Device  e2ee.DeviceID // the device that made the backup
	Created time.Time
	// Settings are the home's non-secret settings (SettingNode, ...).
	Settings map[string]string
	// Contacts are the peers of the user's conversations, ascending.
	Contacts []e2ee.UserID
	// History holds each conversation's messages in their history order.
	History map[e2ee.UserID][]ChatMessage
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
	user     e2ee.UserID
	stage    int // kind of the last record written
	lastKey  []byte
	peer     e2ee.UserID // of the batch
	devices  map[e2ee.DeviceID]uint64
	batch    archiveMessages
	batchLen int
	counts   archiveEnd
	buf      []byte
}

func newArchiveWriter(w io.Writer, user e2ee.UserID, device e2ee.DeviceID, created time.Time) (*archiveWriter, error) {
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

func (aw *archiveWriter) contact(u e2ee.UserID) error {
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
		aw.devices = map[e2ee.DeviceID]uint64{}
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

func (aw *archiveWriter) hasDevice(d e2ee.DeviceID) bool {
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

// ReadArchive decodes a whole archive from r, checking every record's
// shape, order and limits, that messages belong to the archive's user and
// to listed contacts, and that the end record's counts match. It reads r
// to its end. Records are decoded on several cores (decodeArchiveItem)
// and checked in order (archiveChecker).
func ReadArchive(r io.Reader) (*Archive, error) {
	ar := &archiveReader{r: bufio.NewReaderSize(r, 64<<10)}
	ac := &archiveChecker{}
	err := orderedPipeline(pipelineWorkers(), func(emit func(rawArchiveRecord) error) error {
		for {
			b, err := ar.next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return &archiveRecordError{ar.n, err}
			}
			if err := emit(rawArchiveRecord{ar.n, b}); err != nil {
				return err
			}
		}
	}, decodeArchiveItem, ac.add)
	if err == nil {
		err = ac.finish(ar.n)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	return ac.a, nil
}

// DecodeArchive is ReadArchive of b.
func DecodeArchive(b []byte) (*Archive, error) { return ReadArchive(bytes.NewReader(b)) }

// archiveRecordError is an error of the record with number n (counted
// from 1).
type archiveRecordError struct {
	n   int
	err error
}

func (e *archiveRecordError) Error() string { return fmt.Sprintf("record %d: %v", e.n, e.err) }
func (e *archiveRecordError) Unwrap() error { return e.err }

type archiveReader struct {
	r *bufio.Reader
	n int // records read
}

// rawArchiveRecord is the bytes of record number n (counted from 1),
// without the length.
type rawArchiveRecord struct {
	n int
	b []byte
}

// next reads one record into a buffer of its own; io.EOF only at the end
// of the input between records.
func (ar *archiveReader) next() ([]byte, error) {
	var hdr [archiveRecordHeader]byte
	if _, err := io.ReadFull(ar.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("cut short")
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxArchiveRecordSize {
		return nil, fmt.Errorf("length %d (1 to %d)", n, MaxArchiveRecordSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(ar.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("cut short")
		}
		return nil, err
	}
	ar.n++
	return b, nil
}

// decodeCanonical decodes body into v and checks that v encodes back to
// exactly body: one encoding per archive.
func decodeCanonical(body []byte, v any) error {
	if err := storeDec.Unmarshal(body, v); err != nil {
		return err
	}
	again, err := storeEnc.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, body) {
		return errors.New("not canonical CBOR")
	}
	return nil
}

// archiveItem is one record decoded and checked on its own: everything
// but what depends on the records before it (archiveChecker).
type archiveItem struct {
	n    int
	kind uint64
	// header
	version uint64
	user    e2ee.UserID
	device  e2ee.DeviceID
	created time.Time
	// setting
	setting archiveSetting
	// contact (raw: the order is by bytes)
	contact    e2ee.UserID
	contactRaw []byte
	// messages: the peer's, with From set to the peer
	peer     e2ee.UserID
	messages []ChatMessage
	// end
	end archiveEnd
}

// decodeArchiveItem decodes record r: its kind, its body's canonical
// encoding, and the checks a record allows alone.
func decodeArchiveItem(r rawArchiveRecord) (archiveItem, error) {
	it, err := decodeArchiveRecord(r.b)
	if err != nil {
		return archiveItem{}, &archiveRecordError{r.n, err}
	}
	it.n = r.n
	return it, nil
}

func decodeArchiveRecord(b []byte) (archiveItem, error) {
	var rec archiveRecord
	if err := storeDec.Unmarshal(b, &rec); err != nil {
		return archiveItem{}, err
	}
	if rec.Kind < archiveKindHeader || rec.Kind > archiveKindEnd || len(b) < 4 ||
		!bytes.Equal(b[:4], []byte{0xa2, 0x01, byte(rec.Kind), 0x02}) {
		return archiveItem{}, fmt.Errorf("not a canonical record of a known kind (kind %d)", rec.Kind)
	}
	it := archiveItem{kind: rec.Kind}
	var err error
	switch rec.Kind {
	case archiveKindHeader:
		var h archiveHeader
		if err := decodeCanonical(rec.Body, &h); err != nil {
			return archiveItem{}, fmt.Errorf("header: %w", err)
		}
		it.version, it.created = h.Version, time.UnixMilli(h.Created).UTC()
		if it.user, err = e2ee.UserIDFromBytes(h.User); err != nil {
			return archiveItem{}, fmt.Errorf("header: %w", err)
		}
		if it.device, err = e2ee.DeviceIDFromBytes(h.Device); err != nil {
			return archiveItem{}, fmt.Errorf("header: %w", err)
		}
	case archiveKindSetting:
		if err := decodeCanonical(rec.Body, &it.setting); err != nil {
			return archiveItem{}, fmt.Errorf("setting: %w", err)
		}
		if len(it.setting.Name) == 0 || len(it.setting.Name) > MaxSettingNameSize || len(it.setting.Value) > MaxSettingValueSize {
			return archiveItem{}, fmt.Errorf("setting %q: name or value too long", it.setting.Name)
		}
	case archiveKindContact:
		var c archiveContact
		if err := decodeCanonical(rec.Body, &c); err != nil {
			return archiveItem{}, fmt.Errorf("contact: %w", err)
		}
		if it.contact, err = e2ee.UserIDFromBytes(c.User); err != nil {
			return archiveItem{}, fmt.Errorf("contact: %w", err)
		}
		it.contactRaw = c.User
	case archiveKindMessages:
		var ms archiveMessages
		if err := decodeCanonical(rec.Body, &ms); err != nil {
			return archiveItem{}, fmt.Errorf("messages: %w", err)
		}
		if it.peer, err = e2ee.UserIDFromBytes(ms.Peer); err != nil {
			return archiveItem{}, fmt.Errorf("messages: peer: %w", err)
		}
		switch {
		case len(ms.Messages) == 0 || len(ms.Messages) > MaxArchiveBatch:
			return archiveItem{}, fmt.Errorf("%d messages in a record (1 to %d)", len(ms.Messages), MaxArchiveBatch)
		case len(ms.Devices) == 0 || len(ms.Devices) > MaxArchiveDevices:
			return archiveItem{}, fmt.Errorf("%d devices in a record (1 to %d)", len(ms.Devices), MaxArchiveDevices)
		}
		devs := make([]e2ee.DeviceID, len(ms.Devices))
		seen := make(map[e2ee.DeviceID]bool, len(ms.Devices))
		for i, b := range ms.Devices {
			if devs[i], err = e2ee.DeviceIDFromBytes(b); err != nil {
				return archiveItem{}, fmt.Errorf("messages: device: %w", err)
			}
			if seen[devs[i]] {
				return archiveItem{}, fmt.Errorf("messages: device %s listed twice", devs[i])
			}
			seen[devs[i]] = true
		}
		it.messages = make([]ChatMessage, 0, len(ms.Messages))
		for _, w := range ms.Messages {
			if w.Device >= uint64(len(devs)) {
				return archiveItem{}, fmt.Errorf("message of device %d of %d", w.Device, len(devs))
			}
			m := ChatMessage{
				Peer: it.peer, From: it.peer, Device: devs[w.Device], Seq: w.Seq,
				Sent: time.UnixMilli(w.Sent).UTC(), Received: time.UnixMilli(w.Received).UTC(),
				Text: w.Text, Outgoing: w.Outgoing,
			}
			if len(m.Text) > MaxTextSize {
				return archiveItem{}, fmt.Errorf("message %s/%d: text of %d bytes, limit %d", m.Device, m.Seq, len(m.Text), MaxTextSize)
			}
			it.messages = append(it.messages, m)
		}
	case archiveKindEnd:
		if err := decodeCanonical(rec.Body, &it.end); err != nil {
			return archiveItem{}, fmt.Errorf("end: %w", err)
		}
	}
	return it, nil
}

// archiveChecker builds the archive from its records in order, checking
// what depends on the records before each: the header first, the kinds'
// order, settings and contacts ascending, messages of listed contacts
// and of the user, conversations once each and ascending, the end
// record's counts, nothing after it.
type archiveChecker struct {
	a        *Archive
	contacts map[e2ee.UserID]bool
	stage    uint64
	lastKey  []byte
	lastPeer e2ee.UserID
	ended    bool
}

func (ac *archiveChecker) add(it archiveItem) error {
	if err := ac.check(it); err != nil {
		return &archiveRecordError{it.n, err}
	}
	return nil
}

func (ac *archiveChecker) check(it archiveItem) error {
	if ac.a == nil {
		if it.kind != archiveKindHeader {
			return fmt.Errorf("starts with a record of kind %d, not the header", it.kind)
		}
		if it.version != ArchiveVersion {
			return fmt.Errorf("version %d, this client reads %d", it.version, ArchiveVersion)
		}
		ac.a = &Archive{User: it.user, Device: it.device, Created: it.created, Settings: map[string]string{}, History: map[e2ee.UserID][]ChatMessage{}}
		ac.contacts = map[e2ee.UserID]bool{}
		ac.stage = archiveKindHeader
		return nil
	}
	a := ac.a
	if ac.ended {
		return errors.New("data after the end record")
	}
	if it.kind < ac.stage || it.kind == archiveKindHeader {
		return fmt.Errorf("record of kind %d after kind %d", it.kind, ac.stage)
	}
	if it.kind != ac.stage {
		ac.lastKey = nil
	}
	ac.stage = it.kind
	switch it.kind {
	case archiveKindSetting:
		s := it.setting
		if ac.lastKey != nil && bytes.Compare(ac.lastKey, []byte(s.Name)) >= 0 {
			return fmt.Errorf("setting %q out of order", s.Name)
		}
		if len(a.Settings) == MaxArchiveSettings {
			return fmt.Errorf("more than %d settings", MaxArchiveSettings)
		}
		ac.lastKey = []byte(s.Name)
		a.Settings[s.Name] = s.Value
	case archiveKindContact:
		if ac.lastKey != nil && bytes.Compare(ac.lastKey, it.contactRaw) >= 0 {
			return fmt.Errorf("contact %s out of order", it.contact)
		}
		if len(a.Contacts) == MaxArchiveContacts {
			return fmt.Errorf("more than %d contacts", MaxArchiveContacts)
		}
		ac.lastKey = it.contactRaw
		a.Contacts = append(a.Contacts, it.contact)
		ac.contacts[it.contact] = true
	case archiveKindMessages:
		peer := it.peer
		switch {
		case !ac.contacts[peer]:
			return fmt.Errorf("messages with %s, who is not a contact", peer)
		case !peer.Equal(ac.lastPeer) && len(a.History[peer]) > 0:
			return fmt.Errorf("conversation with %s comes twice", peer)
		case !ac.lastPeer.IsZero() && ac.lastPeer.Compare(peer) > 0:
			return fmt.Errorf("conversation with %s out of order", peer)
		}
		ac.lastPeer = peer
		for i := range it.messages {
			m := &it.messages[i]
			if m.Outgoing {
				m.From = a.User
			} else if peer.Equal(a.User) {
				return fmt.Errorf("message %s/%d of the user to the user not marked outgoing", m.Device, m.Seq)
			}
		}
		a.History[peer] = append(a.History[peer], it.messages...)
		a.Messages += len(it.messages)
	case archiveKindEnd:
		e := it.end
		if e.Settings != uint64(len(a.Settings)) || e.Contacts != uint64(len(a.Contacts)) || e.Messages != uint64(a.Messages) {
			return fmt.Errorf("end record counts %d settings, %d contacts, %d messages; the archive holds %d, %d, %d",
				e.Settings, e.Contacts, e.Messages, len(a.Settings), len(a.Contacts), a.Messages)
		}
		ac.ended = true
	}
	return nil
}

// finish checks the archive once its n records were added.
func (ac *archiveChecker) finish(n int) error {
	switch {
	case ac.a == nil:
		return errors.New("record 0: empty")
	case !ac.ended:
		return fmt.Errorf("record %d: no end record", n)
	}
	return nil
}

// checkMessage checks that m is a message of a's user's conversation with
// a listed contact: sent by the user (outgoing) or by the peer.
func (a *Archive) checkMessage(m ChatMessage, contacts map[e2ee.UserID]bool) error {
	switch {
	case !contacts[m.Peer]:
		return fmt.Errorf("message %s/%d with %s, who is not a contact", m.Device, m.Seq, m.Peer)
	case m.Outgoing != m.From.Equal(a.User):
		return fmt.Errorf("message %s/%d: outgoing is %v, sender %s", m.Device, m.Seq, m.Outgoing, m.From)
	case !m.Outgoing && !m.From.Equal(m.Peer):
		return fmt.Errorf("message %s/%d of %s in the conversation with %s", m.Device, m.Seq, m.From, m.Peer)
	case len(m.Text) > MaxTextSize:
		return fmt.Errorf("message %s/%d: text of %d bytes, limit %d", m.Device, m.Seq, len(m.Text), MaxTextSize)
	}
	return nil
}
