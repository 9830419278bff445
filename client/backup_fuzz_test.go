package client

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
)

// FuzzDecodeArchive: whatever the bytes, decoding never panics and fails
// only with ErrBadArchive; an archive it accepts holds only messages of
// its user's conversations with listed contacts, and written again (the
// writer may cut message batches elsewhere) decodes to the same archive.
func FuzzDecodeArchive(f *testing.F) {
	user, dev := testUser(f)
	peer, peerDev := testUser(f)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	small := map[ident.UserID][]ChatMessage{peer: {
		{Peer: peer, From: user, Device: dev, Seq: 0, Sent: at, Received: at, Text: "hello", Outgoing: true},
		{Peer: peer, From: peer, Device: peerDev, Seq: 0, Sent: at, Received: at, Text: "hi"},
	}}
	f.Add(encodeTestArchive(f, user, dev, small, map[string]string{SettingNode: "http://127.0.0.1:8080"}))
	f.Add(encodeTestArchive(f, user, dev, nil, nil))
	f.Add(encodeTestArchive(f, user, dev, small, nil)[:40])
	f.Add([]byte{0, 0, 0, 4, 0xa2, 0x01, 0x05, 0x02})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeArchive(data)
		if err != nil {
			if !errors.Is(err, ErrBadArchive) {
				t.Fatalf("error without ErrBadArchive: %v", err)
			}
			return
		}
		// Re-encode in the archive's own order: settings and contacts
		// ascending, conversations in contact order.
		var buf bytes.Buffer
		aw, err := newArchiveWriter(&buf, a.User, a.Device, a.Created)
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(a.Settings))
		for k := range a.Settings {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			if err := aw.setting(k, a.Settings[k]); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range a.Contacts {
			if err := aw.contact(c); err != nil {
				t.Fatal(err)
			}
		}
		contacts := map[ident.UserID]bool{}
		for _, c := range a.Contacts {
			contacts[c] = true
		}
		n := 0
		for _, c := range a.Contacts {
			for _, m := range a.History[c] {
				if err := a.checkMessage(m, contacts); err != nil {
					t.Fatal(err)
				}
				if err := aw.message(m); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		if n != a.Messages {
			t.Fatalf("history of %d messages, %d counted", n, a.Messages)
		}
		if err := aw.close(); err != nil {
			t.Fatal(err)
		}
		// Batches may be cut elsewhere by another writer; what must hold
		// is that the re-encoding decodes to the same archive.
		b, err := DecodeArchive(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if b.Messages != a.Messages || len(b.Contacts) != len(a.Contacts) || len(b.Settings) != len(a.Settings) {
			t.Fatal("re-encoding decodes to another archive")
		}
	})
}
