package client

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/volo-chat/volo/ident"
)

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
	user    ident.UserID
	device  ident.DeviceID
	created time.Time
	// setting
	setting archiveSetting
	// contact (raw: the order is by bytes)
	contact    ident.UserID
	contactRaw []byte
	// messages: the peer's, with From set to the peer
	peer     ident.UserID
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
		if it.user, err = ident.UserIDFromBytes(h.User); err != nil {
			return archiveItem{}, fmt.Errorf("header: %w", err)
		}
		if it.device, err = ident.DeviceIDFromBytes(h.Device); err != nil {
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
		if it.contact, err = ident.UserIDFromBytes(c.User); err != nil {
			return archiveItem{}, fmt.Errorf("contact: %w", err)
		}
		it.contactRaw = c.User
	case archiveKindMessages:
		var ms archiveMessages
		if err := decodeCanonical(rec.Body, &ms); err != nil {
			return archiveItem{}, fmt.Errorf("messages: %w", err)
		}
		if it.peer, err = ident.UserIDFromBytes(ms.Peer); err != nil {
			return archiveItem{}, fmt.Errorf("messages: peer: %w", err)
		}
		switch {
		case len(ms.Messages) == 0 || len(ms.Messages) > MaxArchiveBatch:
			return archiveItem{}, fmt.Errorf("%d messages in a record (1 to %d)", len(ms.Messages), MaxArchiveBatch)
		case len(ms.Devices) == 0 || len(ms.Devices) > MaxArchiveDevices:
			return archiveItem{}, fmt.Errorf("%d devices in a record (1 to %d)", len(ms.Devices), MaxArchiveDevices)
		}
		devs := make([]ident.DeviceID, len(ms.Devices))
		seen := make(map[ident.DeviceID]bool, len(ms.Devices))
		for i, b := range ms.Devices {
			if devs[i], err = ident.DeviceIDFromBytes(b); err != nil {
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
	contacts map[ident.UserID]bool
	stage    uint64
	lastKey  []byte
	lastPeer ident.UserID
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
		ac.a = &Archive{User: it.user, Device: it.device, Created: it.created, Settings: map[string]string{}, History: map[ident.UserID][]ChatMessage{}}
		ac.contacts = map[ident.UserID]bool{}
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
func (a *Archive) checkMessage(m ChatMessage, contacts map[ident.UserID]bool) error {
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
