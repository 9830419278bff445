package client

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// testUser is a user ID and device ID made from fresh keys.
func testUser(t testing.TB) (ident.UserID, ident.DeviceID) {
	t.Helper()
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return g.UserID(), keys.ID()
}

// testHistory is a history of user with two peers: n messages each way
// with peer a (one of them large), and three with peer b.
func testHistory(t testing.TB, user ident.UserID, dev ident.DeviceID, n int) map[ident.UserID][]ChatMessage {
	t.Helper()
	a, devA := testUser(t)
	b, devB := testUser(t)
	base := time.UnixMilli(1_700_000_000_000).UTC()
	h := map[ident.UserID][]ChatMessage{}
	var seq uint64
	for i := range n {
		at := base.Add(time.Duration(i) * time.Second)
		h[a] = append(h[a],
			ChatMessage{Peer: a, From: user, Device: dev, Seq: seq, Sent: at, Received: at, Text: fmt.Sprintf("to a %d", i), Outgoing: true},
			ChatMessage{Peer: a, From: a, Device: devA, Seq: uint64(i), Sent: at, Received: at.Add(time.Millisecond), Text: fmt.Sprintf("from a %d", i)})
		seq++
	}
	h[a][0].Text = strings.Repeat("large ", MaxTextSize/6)
	for i := range 3 {
		at := base.Add(time.Duration(i) * time.Minute)
		h[b] = append(h[b], ChatMessage{Peer: b, From: b, Device: devB, Seq: uint64(i), Sent: at, Received: at, Text: "from b"})
	}
	return h
}

func encodeTestArchive(t testing.TB, user ident.UserID, dev ident.DeviceID, h map[ident.UserID][]ChatMessage, settings map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	aw, err := newArchiveWriter(&buf, user, dev, time.UnixMilli(1_700_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := aw.setting(k, settings[k]); err != nil {
			t.Fatal(err)
		}
	}
	peers := make([]ident.UserID, 0, len(h))
	for p := range h {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b ident.UserID) int { return a.Compare(b) })
	for _, p := range peers {
		if err := aw.contact(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		for _, m := range h[p] {
			if err := aw.message(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := aw.close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sameHistory(t *testing.T, got, want []ChatMessage) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d messages, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := encodeChatMessage(got[i]), encodeChatMessage(want[i])
		if !bytes.Equal(g.Peer, w.Peer) || !bytes.Equal(g.From, w.From) || !bytes.Equal(g.Device, w.Device) ||
			g.Seq != w.Seq || g.Sent != w.Sent || g.Received != w.Received || g.Text != w.Text || g.Outgoing != w.Outgoing {
			t.Fatalf("message %d differs:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	user, dev := testUser(t)
	h := testHistory(t, user, dev, 1500)
	settings := map[string]string{SettingNode: "http://127.0.0.1:8080", "theme": "dark"}
	enc := encodeTestArchive(t, user, dev, h, settings)
	// Deterministic: the same input gives the same bytes.
	if again := encodeTestArchive(t, user, dev, h, settings); !bytes.Equal(enc, again) {
		t.Fatal("two encodings of one history differ")
	}
	a, err := DecodeArchive(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !a.User.Equal(user) || !a.Device.Equal(dev) || a.Created.UnixMilli() != 1_700_000_000_000 {
		t.Fatalf("header: %s %s %s", a.User, a.Device, a.Created)
	}
	if len(a.Settings) != 2 || a.Settings["theme"] != "dark" || a.Settings[SettingNode] != settings[SettingNode] {
		t.Fatalf("settings %v", a.Settings)
	}
	if len(a.Contacts) != 2 || a.Messages != 3003 {
		t.Fatalf("%d contacts, %d messages", len(a.Contacts), a.Messages)
	}
	for p, want := range h {
		sameHistory(t, a.History[p], want)
	}
}

// Every truncation, every appended byte and a flipped byte in each record
// is refused; the untouched archive decodes (positive control).
func TestArchiveRejects(t *testing.T) {
	user, dev := testUser(t)
	h := testHistory(t, user, dev, 3)
	enc := encodeTestArchive(t, user, dev, h, map[string]string{SettingNode: "http://n"})
	if _, err := DecodeArchive(enc); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	for n := 0; n < len(enc); n += 1 + n/1024*997 {
		if _, err := DecodeArchive(enc[:n]); !errors.Is(err, ErrBadArchive) {
			t.Fatalf("cut at %d of %d: %v", n, len(enc), err)
		}
	}
	if _, err := DecodeArchive(append(slices.Clone(enc), 0)); !errors.Is(err, ErrBadArchive) {
		t.Fatalf("trailing byte: %v", err)
	}
	// A second end record, a record before the header, a record out of order.
	recs := splitArchive(t, enc)
	cases := map[string][][]byte{
		"two ends":          append(slices.Clone(recs), recs[len(recs)-1]),
		"no header":         recs[1:],
		"contact first":     append([][]byte{recs[0], recs[2], recs[1]}, recs[3:]...),
		"duplicate contact": append([][]byte{recs[0], recs[1], recs[2], recs[2]}, recs[3:]...),
		"no end":            recs[:len(recs)-1],
		"messages twice":    append(slices.Clone(recs[:len(recs)-1]), recs[len(recs)-2], recs[len(recs)-1]),
	}
	for name, rs := range cases {
		if _, err := DecodeArchive(bytes.Join(rs, nil)); !errors.Is(err, ErrBadArchive) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// splitArchive cuts an archive into its length-prefixed records.
func splitArchive(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		n := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		out = append(out, b[:4+n])
		b = b[4+n:]
	}
	return out
}

// The writer refuses a message that is neither the user's (outgoing) nor
// the peer's; the reader refuses messages of a peer that is not a contact,
// the user's own messages not marked outgoing, and device indexes out of
// the record's list.
func TestArchiveRejectsForeignMessages(t *testing.T) {
	user, dev := testUser(t)
	other, otherDev := testUser(t)
	peer, peerDev := testUser(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	ok := ChatMessage{Peer: peer, From: peer, Device: peerDev, Seq: 1, Sent: at, Received: at, Text: "hi"}
	if _, err := DecodeArchive(encodeTestArchive(t, user, dev, map[ident.UserID][]ChatMessage{peer: {ok}}, nil)); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	for name, m := range map[string]ChatMessage{
		"third party":       {Peer: peer, From: other, Device: otherDev, Seq: 1, Sent: at, Received: at, Text: "x"},
		"outgoing of other": {Peer: peer, From: peer, Device: peerDev, Seq: 1, Sent: at, Received: at, Text: "x", Outgoing: true},
		"own not outgoing":  {Peer: peer, From: user, Device: dev, Seq: 1, Sent: at, Received: at, Text: "x"},
	} {
		aw, _ := newArchiveWriter(io.Discard, user, dev, at)
		if err := aw.message(m); err == nil {
			t.Errorf("writer took %s", name)
		}
	}
	raw := func(contacts []ident.UserID, ms archiveMessages) []byte {
		var buf bytes.Buffer
		aw, _ := newArchiveWriter(&buf, user, dev, at)
		for _, c := range contacts {
			if err := aw.contact(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := aw.record(archiveKindMessages, ms); err != nil {
			t.Fatal(err)
		}
		if err := aw.record(archiveKindEnd, archiveEnd{Contacts: uint64(len(contacts)), Messages: uint64(len(ms.Messages))}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	msg := archiveMessage{Device: 0, Seq: 1, Sent: at.UnixMilli(), Received: at.UnixMilli(), Text: "x"}
	if _, err := DecodeArchive(raw([]ident.UserID{peer}, archiveMessages{Peer: peer.Bytes(), Devices: [][]byte{peerDev.Bytes()}, Messages: []archiveMessage{msg}})); err != nil {
		t.Fatalf("positive control (raw): %v", err)
	}
	bad := msg
	bad.Device = 1
	for name, b := range map[string][]byte{
		"not a contact":      raw(nil, archiveMessages{Peer: peer.Bytes(), Devices: [][]byte{peerDev.Bytes()}, Messages: []archiveMessage{msg}}),
		"own not outgoing":   raw([]ident.UserID{user}, archiveMessages{Peer: user.Bytes(), Devices: [][]byte{dev.Bytes()}, Messages: []archiveMessage{msg}}),
		"device out of list": raw([]ident.UserID{peer}, archiveMessages{Peer: peer.Bytes(), Devices: [][]byte{peerDev.Bytes()}, Messages: []archiveMessage{bad}}),
		"device twice":       raw([]ident.UserID{peer}, archiveMessages{Peer: peer.Bytes(), Devices: [][]byte{peerDev.Bytes(), peerDev.Bytes()}, Messages: []archiveMessage{msg}}),
		"no messages":        raw([]ident.UserID{peer}, archiveMessages{Peer: peer.Bytes(), Devices: [][]byte{peerDev.Bytes()}, Messages: []archiveMessage{}}),
	} {
		if _, err := DecodeArchive(b); !errors.Is(err, ErrBadArchive) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The whole stream (archive, Zstandard, e2ee) decodes with the password; a
// wrong password, a changed byte anywhere or a cut stream give
// ErrBackupWrongPassword.
func TestDecodeBackupStream(t *testing.T) {
	user, dev := testUser(t)
	h := testHistory(t, user, dev, 200)
	pw := []byte("correct horse battery")
	var plain bytes.Buffer
	fw, _ := zstd.NewWriter(&plain, zstd.WithEncoderLevel(BackupCompression))
	fw.Write(encodeTestArchive(t, user, dev, h, nil))
	fw.Close()
	sealed, err := e2ee.EncryptBackup(plain.Bytes(), pw, testKDF, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := decodeBackup(bytes.NewReader(sealed), pw)
	if err != nil {
		t.Fatalf("positive control: %v", err)
	}
	if a.Messages != 403 {
		t.Fatalf("%d messages", a.Messages)
	}
	if _, err := decodeBackup(bytes.NewReader(sealed), []byte("wrong horse battery")); !errors.Is(err, ErrBackupWrongPassword) || !errors.Is(err, e2ee.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	for _, at := range []int{e2ee.BackupHeaderSize + 20, len(sealed) / 2, len(sealed) - 1} {
		bad := slices.Clone(sealed)
		bad[at] ^= 1
		if _, err := decodeBackup(bytes.NewReader(bad), pw); !errors.Is(err, ErrBackupWrongPassword) {
			t.Fatalf("byte %d changed: %v", at, err)
		}
	}
	if _, err := decodeBackup(bytes.NewReader(sealed[:len(sealed)-100]), pw); !errors.Is(err, ErrBackupWrongPassword) {
		t.Fatalf("cut: %v", err)
	}
	// Compressed data after the archive's end record, authentic: refused.
	var extra bytes.Buffer
	fw, _ = zstd.NewWriter(&extra, zstd.WithEncoderLevel(BackupCompression))
	fw.Write(encodeTestArchive(t, user, dev, h, nil))
	fw.Write([]byte{0, 0, 0, 1})
	fw.Close()
	sealed2, _ := e2ee.EncryptBackup(extra.Bytes(), pw, testKDF, nil)
	if _, err := decodeBackup(bytes.NewReader(sealed2), pw); !errors.Is(err, ErrBackupWrongPassword) {
		t.Fatalf("data after the end record: %v", err)
	}
	// Bytes after the Zstandard stream, authentic: refused.
	sealed3, _ := e2ee.EncryptBackup(append(slices.Clone(plain.Bytes()), 7), pw, testKDF, nil)
	if _, err := decodeBackup(bytes.NewReader(sealed3), pw); !errors.Is(err, ErrBackupWrongPassword) {
		t.Fatalf("data after the compressed stream: %v", err)
	}
}

func TestMergeHistory(t *testing.T) {
	user, dev := testUser(t)
	peer, peerDev := testUser(t)
	_, newDev := testUser(t) // the restoring device
	at := func(s int) time.Time { return time.UnixMilli(1_700_000_000_000 + int64(s)*1000).UTC() }
	old := []ChatMessage{
		{Peer: peer, From: user, Device: dev, Seq: 0, Sent: at(1), Received: at(1), Text: "o0", Outgoing: true},
		{Peer: peer, From: peer, Device: peerDev, Seq: 0, Sent: at(2), Received: at(2), Text: "p0"},
		{Peer: peer, From: user, Device: dev, Seq: 1, Sent: at(3), Received: at(3), Text: "o1", Outgoing: true},
		{Peer: peer, From: peer, Device: peerDev, Seq: 1, Sent: at(4), Received: at(4), Text: "p1"},
	}
	// Empty history: the backup's order exactly.
	got, n := mergeHistory(nil, old)
	if n != 4 {
		t.Fatalf("added %d", n)
	}
	sameHistory(t, got, old)
	// Restoring again adds nothing and changes nothing.
	again, n := mergeHistory(got, old)
	if n != 0 {
		t.Fatalf("second restore added %d", n)
	}
	sameHistory(t, again, old)
	// A device that got newer messages already: the old ones come first,
	// the existing ones keep their order and content.
	existing := []ChatMessage{
		{Peer: peer, From: peer, Device: peerDev, Seq: 1, Sent: at(4), Received: at(10), Text: "p1"},
		{Peer: peer, From: peer, Device: peerDev, Seq: 2, Sent: at(11), Received: at(11), Text: "p2"},
		{Peer: peer, From: user, Device: newDev, Seq: 0, Sent: at(12), Received: at(12), Text: "n0", Outgoing: true},
	}
	got, n = mergeHistory(existing, old)
	if n != 3 {
		t.Fatalf("added %d, want 3 (p1 is there already)", n)
	}
	var texts []string
	for _, m := range got {
		texts = append(texts, m.Text)
	}
	if want := []string{"o0", "p0", "o1", "p1", "p2", "n0"}; !slices.Equal(texts, want) {
		t.Fatalf("merged %q, want %q", texts, want)
	}
	if !got[3].Received.Equal(at(10)) {
		t.Fatalf("p1 received at %s: the backup's copy replaced this device's", got[3].Received)
	}
}

// Two different messages with the same device and sequence number (a
// number used twice by a device that lost it, or a forged one) are both
// kept by a restore: only the same device, number, sent time and text make
// the same message. The store replays them in the same order.
func TestImportKeepsMessagesSharingASequenceNumber(t *testing.T) {
	ch, c, pass := openTestChat(t)
	user := ch.self.User
	peer, peerDev := testUser(t)
	at := func(s int) time.Time { return time.UnixMilli(1_700_000_000_000 + int64(s)*1000).UTC() }
	first := ChatMessage{Peer: peer, From: peer, Device: peerDev, Seq: 7, Sent: at(1), Received: at(1), Text: "first"}
	other := first
	other.Sent, other.Received, other.Text = at(2), at(2), "another, same number"
	sameTime := first
	sameTime.Received, sameTime.Text = at(3), "same number and time"
	import1 := func(h []ChatMessage) int {
		t.Helper()
		a, err := DecodeArchive(encodeTestArchive(t, user, ch.self.Device, map[ident.UserID][]ChatMessage{peer: h}, nil))
		if err != nil {
			t.Fatal(err)
		}
		n, err := ch.importArchive(a)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := import1([]ChatMessage{first}); n != 1 {
		t.Fatalf("first import added %d", n)
	}
	if n := import1([]ChatMessage{first, other, sameTime}); n != 2 {
		t.Fatalf("second import added %d, want 2 (first is there already)", n)
	}
	if n := import1([]ChatMessage{other, sameTime}); n != 0 {
		t.Fatalf("third import added %d", n)
	}
	want := []ChatMessage{first, other, sameTime}
	sameHistory(t, ch.History(peer), want)
	ch.Close()
	re, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	sameHistory(t, re.History(peer), want)
}

// openTestChat opens a chat on a home with a device and no node.
func openTestChat(t *testing.T) (*Chat, *Client, []byte) {
	t.Helper()
	return openTestChatKDF(t, testKDF)
}

// openTestChatKDF is openTestChat with a home whose keys (and chat store)
// use kdf.
func openTestChatKDF(t testing.TB, kdf e2ee.BackupParams) (*Chat, *Client, []byte) {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), "home"), kdf)
	if err != nil {
		t.Fatal(err)
	}
	keys, st := testDevice(t)
	pass := []byte("device pass")
	if err := h.Create(keys, pass, st); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Home: h.Dir(), Node: "http://127.0.0.1:1", KDF: kdf})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch, c, pass
}

// Importing an archive adds the messages, keeps the session state and
// sequence number, and survives reopening the store (the rewritten log
// replays to the same history); importing it again adds nothing.
func TestImportArchive(t *testing.T) {
	ch, c, pass := openTestChat(t)
	user := ch.self.User
	_, oldDev := testUser(t)
	h := testHistory(t, user, oldDev, 300)
	ch.mu.Lock()
	ch.st.seq = 42
	ch.mu.Unlock()
	a, err := DecodeArchive(encodeTestArchive(t, user, oldDev, h, map[string]string{SettingNode: "http://other:1"}))
	if err != nil {
		t.Fatal(err)
	}
	n, err := ch.importArchive(a)
	if err != nil {
		t.Fatal(err)
	}
	if n != a.Messages {
		t.Fatalf("imported %d of %d", n, a.Messages)
	}
	for p, want := range h {
		sameHistory(t, ch.History(p), want)
	}
	if n, err := ch.importArchive(a); err != nil || n != 0 {
		t.Fatalf("second import: %d, %v", n, err)
	}
	ch.Close()
	re, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	for p, want := range h {
		sameHistory(t, re.History(p), want)
	}
	if re.st.seq != 42 {
		t.Fatalf("sequence number %d after reopening, want 42", re.st.seq)
	}
	// The home's node was set: the archive's is not taken.
	if st, _ := c.Home().State(); st.Node != "http://127.0.0.1:1" {
		t.Fatalf("node %q", st.Node)
	}
	// Nothing of the plaintext is in the home.
	if found := grepDir(t, c.Home().Dir(), map[string][]byte{"text": []byte("from a 299")}); len(found) > 0 {
		t.Fatalf("home holds %v", found)
	}
	// An archive of another user is refused.
	other, otherDev := testUser(t)
	b, err := DecodeArchive(encodeTestArchive(t, other, otherDev, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := re.importArchive(b); err == nil {
		t.Fatal("imported another user's archive")
	}
}

// A backup of this very device, restored after its store was lost, holds
// sequence numbers the device used: the next message takes one above
// them, now and after reopening.
func TestImportOwnBackupMovesSequencePast(t *testing.T) {
	ch, c, pass := selfChat(t, testKDF)
	var h []ChatMessage
	for i := range 5 {
		at := time.UnixMilli(1_700_000_000_000 + int64(i)*1000).UTC()
		h = append(h, ChatMessage{Peer: ch.self.User, From: ch.self.User, Device: ch.self.Device, Seq: uint64(i), Sent: at, Received: at, Text: fmt.Sprintf("before the loss %d", i), Outgoing: true})
	}
	a, err := DecodeArchive(encodeTestArchive(t, ch.self.User, ch.self.Device, map[ident.UserID][]ChatMessage{ch.self.User: h}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ch.importArchive(a); err != nil || n != 5 {
		t.Fatalf("imported %d: %v", n, err)
	}
	if m := sendSelf(t, ch, "after the restore"); m.Seq != 5 {
		t.Fatalf("sent with seq %d, want 5", m.Seq)
	}
	ch.Close()
	re := reopenSelfChat(t, c, pass)
	if m := sendSelf(t, re, "after reopening"); m.Seq != 6 {
		t.Fatalf("sent with seq %d after reopening, want 6", m.Seq)
	}
	if got := re.History(re.self.User); len(got) != 7 {
		t.Fatalf("history of %d messages, want 7", len(got))
	}
}

// The packed backup (archive, Zstandard, e2ee, chunks) of a chat decodes
// to its history, holds no plaintext, and is never larger than the bound
// the quota preflight uses: for chat-like text and for text that does not
// compress, with the test's tiny e2ee frames and the default ones.
func TestPackDecodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		random bool
		kdf    e2ee.BackupParams
	}{
		{"text", false, testKDF},
		{"random", true, testKDF},
		{"random, default frames", true, e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.DefaultBackupChunkSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, c, _ := openTestChat(t)
			_, oldDev := testUser(t)
			h := testHistory(t, ch.self.User, oldDev, 2000)
			if tc.random {
				for p, ms := range h {
					for i := range ms {
						b := make([]byte, 50+i%200)
						rand.Read(b)
						ms[i].Text = base64.StdEncoding.EncodeToString(b)
					}
					h[p] = ms
				}
			}
			ch.mu.Lock()
			for _, ms := range h {
				for _, m := range ms {
					ch.st.insert(m)
				}
			}
			ch.mu.Unlock()
			st, _ := c.Home().State()
			peers, messages, bound := ch.backupBound(tc.kdf)
			if messages != 4003 || len(peers) != 2 {
				t.Fatalf("%d messages of %d peers", messages, len(peers))
			}
			var res BackupResult
			var reports []BackupProgress
			var data []byte
			pw := []byte("a long enough password")
			prog := newProgress(func(p BackupProgress) { reports = append(reports, p) }, PhasePack, int64(messages))
			chunks, err := ch.pack(t.Context(), pw, tc.kdf, st, peers, prog, &res, func(c pendingChunk) error {
				if c.index*BackupChunkSize != len(data) || !c.chunk.CID.Equals(wire.ChunkCID(c.data)) {
					return fmt.Errorf("chunk %d out of order or with a wrong CID", c.index)
				}
				data = append(data, c.data...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Messages != 4003 || res.Contacts != 2 {
				t.Fatalf("packed %+v", res)
			}
			if last := reports[len(reports)-1]; last.Phase != PhasePack || last.Done != 4003 || last.Total != 4003 {
				t.Fatalf("last progress %+v", last)
			}
			if uint64(len(data)) > bound {
				t.Fatalf("backup of %d bytes, over the bound %d", len(data), bound)
			}
			t.Logf("%d bytes in %d chunks, bound %d", len(data), len(chunks), bound)
			var sum int
			for i, c := range chunks {
				if i < len(chunks)-1 && c.Size != BackupChunkSize {
					t.Fatalf("chunk %d of %d bytes", i, c.Size)
				}
				sum += int(c.Size)
			}
			if sum != len(data) {
				t.Fatalf("chunks add up to %d, the stream has %d", sum, len(data))
			}
			if found := findIn(data, map[string][]byte{"text": []byte("from a 1999")}); len(found) > 0 {
				t.Fatalf("backup holds %v", found)
			}
			a, err := decodeBackup(bytes.NewReader(data), pw)
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range h {
				sameHistory(t, a.History[p], want)
			}
			if a.Settings[SettingNode] != st.Node {
				t.Fatalf("settings %v", a.Settings)
			}
		})
	}
}

// A history of several BackupSegmentSize segments packs into several
// independent Zstandard frames, compressed in parallel and written in
// order: the backup decodes to the same history, in order.
func TestPackManySegments(t *testing.T) {
	kdf := e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.DefaultBackupChunkSize}
	ch, c, _ := openTestChatKDF(t, kdf)
	if n := fillHistory(t, ch, 3*BackupSegmentSize+BackupSegmentSize/2); n <= 3*BackupSegmentSize {
		t.Fatalf("history of %d bytes", n)
	}
	st, _ := c.Home().State()
	peers, messages, _ := ch.backupBound(kdf)
	var res BackupResult
	var data []byte
	pw := []byte("a long enough password")
	_, err := ch.pack(t.Context(), pw, kdf, st, peers, newProgress(nil, PhasePack, int64(messages)), &res, func(c pendingChunk) error {
		data = append(data, c.data...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := decodeBackup(bytes.NewReader(data), pw)
	if err != nil {
		t.Fatal(err)
	}
	if a.Messages != messages || res.Messages != messages {
		t.Fatalf("decoded %d messages, packed %d, the history has %d", a.Messages, res.Messages, messages)
	}
	for _, p := range peers {
		sameHistory(t, a.History[p], ch.History(p))
	}
}

func TestSampleIndexes(t *testing.T) {
	if got := sampleIndexes(3, 32); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatal(got)
	}
	got := sampleIndexes(1000, 5)
	if !slices.Equal(got, []int{0, 249, 499, 749, 999}) {
		t.Fatal(got)
	}
}
