package client

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

func storeFixture(t testing.TB) (dir string, key *e2ee.BackupKey, msg func(seq uint64, text string) ChatMessage) {
	t.Helper()
	dir = t.TempDir()
	key, err := e2ee.DeriveBackupKey([]byte("store pass"), testKDF, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(k, testTime)
	if err != nil {
		t.Fatal(err)
	}
	user, dev := g.UserID(), k.ID()
	return dir, key, func(seq uint64, text string) ChatMessage {
		return ChatMessage{Peer: user, From: user, Device: dev, Seq: seq, Sent: testTime, Received: testTime, Text: text}
	}
}

// The log replays to the same history, keeps each device's messages in
// sequence order whatever order they were stored in, drops a torn last
// record (a crash mid-write), refuses a changed record and another key,
// and compacts to the same state. Its file is 0600 and holds no plaintext.
func TestChatLog(t *testing.T) {
	dir, key, msg := storeFixture(t)
	l, st, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{0, 2, 1, 3} {
		m := msg(seq, "secret text "+string(rune('a'+seq)))
		if err := l.append(chatRecord{History: []chatMessageWire{encodeChatMessage(m)}, Seq: seq + 1}); err != nil {
			t.Fatal(err)
		}
		st.insert(m)
	}
	l.close()
	check := func(st *chatState) {
		t.Helper()
		h := st.history[msg(0, "").Peer]
		if len(h) != 4 || st.seq != 4 {
			t.Fatalf("history of %d, seq %d", len(h), st.seq)
		}
		for i, m := range h {
			if m.Seq != uint64(i) || m.Text != "secret text "+string(rune('a'+i)) || !m.Sent.Equal(testTime) {
				t.Fatalf("entry %d: %+v", i, m)
			}
		}
	}
	path := filepath.Join(dir, ChatLogFile)
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte("secret text")) {
		t.Fatal("plaintext in the log")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != HomeFileMode {
		t.Fatalf("log mode %v", fi.Mode().Perm())
	}
	l, st, err = openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	check(st)
	l.close()

	// A torn record at the end is dropped; what came before stays.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0, 0, 1, 0, 9, 9})
	f.Close()
	l, st, err = openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	check(st)
	if fi, _ := os.Stat(path); fi.Size() != int64(len(data)) {
		t.Fatalf("torn record not truncated: %d bytes, want %d", fi.Size(), len(data))
	}
	if err := l.compact(st); err != nil {
		t.Fatal(err)
	}
	l.close()
	l, st, err = openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	check(st)
	l.close()

	// Another key, or a changed byte, is a corrupt home.
	other, _ := e2ee.DeriveBackupKey([]byte("other"), testKDF, nil)
	if _, _, err := openChatLog(dir, other); !errors.Is(err, ErrCorruptHome) {
		t.Fatalf("other key: %v", err)
	}
	data, _ = os.ReadFile(path)
	data[len(data)/2] ^= 1
	os.WriteFile(path, data, HomeFileMode)
	if _, _, err := openChatLog(dir, key); !errors.Is(err, ErrCorruptHome) {
		t.Fatalf("changed byte: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := openChatLog(dir, key); !errors.Is(err, ErrHomePermissions) {
		t.Fatalf("readable log: %v", err)
	}
}

// A history larger than one record may hold (MaxChatRecordSize) compacts:
// the message that makes the log compact is stored, the compacted log
// replays to the same history, and the next message is appended without
// writing the whole history again.
func TestChatLogCompactsLargeHistory(t *testing.T) {
	dir, _, msg := storeFixture(t)
	// The default frame size: the tests' 64-byte frames would make
	// sealing 70 MiB the test's cost.
	key, err := e2ee.DeriveBackupKey([]byte("store pass"), e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.DefaultBackupChunkSize}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, st, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.close() }()
	const perRecord = 40
	messages := ((MaxChatRecordSize+4<<20)/MaxTextSize/perRecord + 1) * perRecord // about 70 MiB of text
	text := func(seq uint64) string {
		return fmt.Sprintf("%08d", seq) + strings.Repeat(string(rune('a'+seq%26)), MaxTextSize-8)
	}
	var seq uint64
	for seq < uint64(messages) {
		var rec chatRecord
		for range perRecord {
			m := msg(seq, text(seq))
			rec.History = append(rec.History, encodeChatMessage(m))
			st.insert(m)
			seq++
		}
		rec.Seq = seq
		st.seq = seq
		if err := l.append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if l.size <= MaxChatRecordSize {
		t.Fatalf("log of %d bytes: the test needs more than %d", l.size, MaxChatRecordSize)
	}

	// The log is past ChatCompactSize: the next message compacts it.
	ch := &Chat{st: st, store: l, log: slog.New(slog.DiscardHandler)}
	m := msg(seq, "after compaction")
	if err := ch.commitLocked(chatRecord{History: []chatMessageWire{encodeChatMessage(m)}, Seq: seq + 1}); err != nil {
		t.Fatalf("message stored with a history of %d bytes: %v", l.size, err)
	}
	if l.base != l.size {
		t.Fatalf("log of %d bytes not compacted", l.size)
	}
	compacted := l.size
	fi, err := os.Stat(filepath.Join(dir, ChatLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != compacted || compacted > int64(messages)*(MaxTextSize+1024) {
		t.Fatalf("compacted log of %d bytes on disk, %d counted, %d messages", fi.Size(), compacted, messages+1)
	}

	// One more message is appended, the history not written again.
	m2 := msg(seq+1, "appended")
	if err := ch.commitLocked(chatRecord{History: []chatMessageWire{encodeChatMessage(m2)}, Seq: seq + 2}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ChatLogFile)); err != nil || fi.Size() != l.size || l.size-compacted > 4096 {
		t.Fatalf("after one more message: %d bytes counted (%d after compaction), stat %v", l.size, compacted, err)
	}
	l.close()

	l, again, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	h := again.history[msg(0, "").Peer]
	if len(h) != messages+2 || again.seq != seq+2 {
		t.Fatalf("replayed %d messages, seq %d; want %d, %d", len(h), again.seq, messages+2, seq+2)
	}
	for i, got := range h[:messages] {
		if got.Seq != uint64(i) || got.Text != text(uint64(i)) {
			t.Fatalf("message %d: seq %d, text of %d bytes", i, got.Seq, len(got.Text))
		}
	}
	if h[messages].Text != "after compaction" || h[messages+1].Text != "appended" {
		t.Fatalf("last messages %q, %q", h[messages].Text, h[messages+1].Text)
	}
}

// FuzzSplitChatLog: any log bytes split into records that lie inside the
// input and end at the reported length, or give an error.
func FuzzSplitChatLog(f *testing.F) {
	rec := func(n int) []byte {
		b := make([]byte, 4+n)
		binary.BigEndian.PutUint32(b, uint32(n))
		return b
	}
	f.Add(append(rec(3), rec(5)...))
	f.Add(append(rec(3), 0, 0))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, good, err := splitChatLog(data)
		if err != nil {
			return
		}
		if good > len(data) {
			t.Fatalf("good %d past %d bytes", good, len(data))
		}
		total := 0
		for _, r := range recs {
			total += 4 + len(r)
		}
		if total != good {
			t.Fatalf("records cover %d bytes, good is %d", total, good)
		}
	})
}

// FuzzChatRecord: any decrypted record decodes or errs, and applying one
// never panics; what applies re-snapshots.
// newDeviceKeys makes random device keys.
func newDeviceKeys(t testing.TB) e2ee.DeviceKeys {
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func FuzzChatRecord(f *testing.F) {
	_, _, msg := storeFixture(f)
	good, _ := storeEnc.Marshal(chatRecord{History: []chatMessageWire{encodeChatMessage(msg(1, "x"))}, Seq: 2})
	f.Add(good)
	m := msg(2, "y")
	m.Outgoing, m.State, m.Local = true, StatePending, 5
	env := wire.Envelope{To: m.Device, ID: wire.NewEnvelopeID(), Time: testTime, TTL: wire.DefaultTTL, Ciphertext: []byte("c")}
	ow, _ := encodeOutboxEntry(&outboxEntry{peer: m.Peer, seq: 2, envs: []wire.Envelope{env}, kinds: []e2ee.EnvelopeKind{e2ee.EnvelopeMessage}})
	states, _ := storeEnc.Marshal(chatRecord{History: []chatMessageWire{encodeChatMessage(m)}, Outbox: []outboxWire{ow},
		Done:      []doneWire{{Seq: 2, Peer: m.Peer.Bytes(), State: uint8(StateSent)}},
		Delivered: []msgRefWire{{Peer: m.Peer.Bytes(), Device: m.Device.Bytes(), Seq: 2}},
		Seen:      []seenWire{{Peer: m.Peer.Bytes(), Local: 5}}})
	f.Add(states)
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x03, 0x81, 0x40})
	// A pinned chain: genesis and an add-device link.
	pk := newDeviceKeys(f)
	g, _ := e2ee.NewGenesis(pk, testTime)
	set, _ := ident.VerifyChain(g.UserID(), []ident.Link{g})
	req, _ := e2ee.NewAddDeviceRequest(set.Head(), newDeviceKeys(f))
	add, _ := e2ee.NewAddDevice(set, pk, req, testTime)
	pins, _ := storeEnc.Marshal(chatRecord{Pins: []pinWire{{User: g.UserID().Bytes(), Links: [][]byte{g.Encode(), add.Encode()}}}})
	f.Add(pins)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeChatRecord(data)
		if err != nil {
			return
		}
		st := newChatState()
		if err := st.apply(r); err != nil {
			return
		}
		snap, err := st.snapshotSessions()
		if err != nil {
			t.Fatalf("applied record does not snapshot: %v", err)
		}
		for _, w := range snap.Pins {
			if _, err := decodePin(w); err != nil {
				t.Fatalf("a pinned chain does not verify again: %v", err)
			}
		}
		for _, h := range st.history {
			for _, m := range h {
				if _, err := decodeChatMessage(encodeChatMessage(m)); err != nil {
					t.Fatalf("applied message does not re-encode: %v", err)
				}
			}
		}
	})
}

// FuzzChatPayload: any message plaintext decodes to a valid recipient and
// bounded text, or errs.
func FuzzChatPayload(f *testing.F) {
	_, _, msg := storeFixture(f)
	m := msg(0, "")
	good, _ := storeEnc.Marshal(chatPayload{To: m.Peer.Bytes(), Seq: 7, Sent: time.Now().UnixMilli(), Text: "hi"})
	f.Add(good)
	receipt, _ := storeEnc.Marshal(chatPayload{To: m.Peer.Bytes(), Seq: 8, Sent: time.Now().UnixMilli(),
		Receipts: []receiptWire{{Device: m.Device.Bytes(), Seq: 3}, {Device: m.Device.Bytes(), Seq: 4}}})
	f.Add(receipt)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, to, err := decodeChatPayload(data)
		if err != nil {
			return
		}
		if to.IsZero() || len(p.Text) > MaxTextSize || len(p.Receipts) > MaxReceipts || (len(p.Receipts) > 0 && p.Text != "") {
			t.Fatalf("accepted %+v", p)
		}
		for _, r := range p.Receipts {
			if _, err := ident.DeviceIDFromBytes(r.Device); err != nil {
				t.Fatalf("accepted a receipt of device %x", r.Device)
			}
		}
	})
}

// selfChat opens a chat on a new home (openTestChatKDF) that writes to
// its own user without a node: the user has this one device, so a message
// to oneself has no recipient and goes to the store only.
func selfChat(t testing.TB, kdf e2ee.BackupParams) (*Chat, *Client, []byte) {
	t.Helper()
	ch, c, pass := openTestChatKDF(t, kdf)
	ownChainFresh(t, ch)
	return ch, c, pass
}

// ownChainFresh makes ch take the chain saved in the home as its own
// verified chain for the rest of the test, so sends to oneself need no
// node.
func ownChainFresh(t testing.TB, ch *Chat) {
	t.Helper()
	st, err := ch.c.home.State()
	if err != nil {
		t.Fatal(err)
	}
	set, _, err := savedChain(st)
	if err != nil {
		t.Fatal(err)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	// Fetched in the future: younger than ChainMaxAge for any test.
	ch.chains[ch.self.User] = cachedChain{set: set, fetched: time.Now().Add(24 * time.Hour)}
}

// reopenSelfChat opens the home's chat store again, as the next run of
// the program would.
func reopenSelfChat(t testing.TB, c *Client, pass []byte) *Chat {
	t.Helper()
	ch, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	ownChainFresh(t, ch)
	return ch
}

// sendSelf sends text to ch's own user and returns the message stored.
func sendSelf(t testing.TB, ch *Chat, text string) ChatMessage {
	t.Helper()
	rep, err := ch.Send(t.Context(), ch.self.User, text)
	if err != nil {
		t.Fatalf("send of %d bytes: %v", len(text), err)
	}
	return rep.Message
}

// checkSelfHistory checks that ch's conversation with itself holds the
// texts, in order, the i-th with sequence number i.
func checkSelfHistory(t testing.TB, ch *Chat, texts []string) {
	t.Helper()
	h := ch.History(ch.self.User)
	if len(h) != len(texts) {
		t.Errorf("history of %d messages, want %d", len(h), len(texts))
	}
	for i, m := range h {
		if i >= len(texts) || m.Seq != uint64(i) || m.Text != texts[i] {
			t.Fatalf("message %d: seq %d, text of %d bytes %.12q", i, m.Seq, len(m.Text), m.Text)
		}
	}
}

// A message sent while the log passes its compaction size is in the
// compacted log, with its sequence number: the log is compacted several
// times and every message comes back after reopening, in order, each
// with its own sequence number; the next message takes the next number.
func TestChatSendKeepsEveryMessageThroughCompactions(t *testing.T) {
	ch, c, pass := selfChat(t, e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: 4096})
	ch.store.compactSize = 32 << 10
	var texts []string
	compactions := 0
	for i := range 400 {
		text := fmt.Sprintf("%04d ", i) + strings.Repeat(string(rune('a'+i%26)), 200+i*37%1500)
		base := ch.store.base
		if m := sendSelf(t, ch, text); m.Seq != uint64(i) {
			t.Fatalf("message %d sent with seq %d", i, m.Seq)
		}
		if ch.store.base != base {
			compactions++
		}
		texts = append(texts, text)
	}
	if compactions < 4 {
		t.Fatalf("the log was compacted %d times, the test needs at least 4", compactions)
	}
	checkSelfHistory(t, ch, texts)
	ch.Close()

	re := reopenSelfChat(t, c, pass)
	checkSelfHistory(t, re, texts)
	if m := sendSelf(t, re, "next"); m.Seq != uint64(len(texts)) {
		t.Fatalf("next message has seq %d, want %d", m.Seq, len(texts))
	}
}

// The same at the real compaction size: 100 messages of 200 KB to
// oneself pass ChatCompactSize once; every one is there after reopening
// and the next run goes on with the next sequence number.
func TestChatSendPastChatCompactSize(t *testing.T) {
	ch, c, pass := selfChat(t, e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.DefaultBackupChunkSize})
	var texts []string
	compacted := false
	for i := range 100 {
		text := fmt.Sprintf("%04d ", i) + strings.Repeat(string(rune('a'+i%26)), 200_000)
		base := ch.store.base
		sendSelf(t, ch, text)
		compacted = compacted || ch.store.base != base
		texts = append(texts, text)
	}
	if !compacted {
		t.Fatalf("log of %d bytes never compacted", ch.store.size)
	}
	ch.Close()
	re := reopenSelfChat(t, c, pass)
	checkSelfHistory(t, re, texts)
	if m := sendSelf(t, re, "next run"); m.Seq != 100 {
		t.Fatalf("next run sent with seq %d, want 100", m.Seq)
	}
}

// A message of exactly MaxTextSize is stored and comes back whole after
// reopening; one byte more is refused.
func TestChatStoresMaxTextSize(t *testing.T) {
	ch, c, pass := selfChat(t, testKDF)
	text := strings.Repeat("é", MaxTextSize/2) + strings.Repeat("x", MaxTextSize%2)
	if len(text) != MaxTextSize {
		t.Fatalf("text of %d bytes", len(text))
	}
	sendSelf(t, ch, text)
	if _, err := ch.Send(t.Context(), ch.self.User, text+"x"); !errors.Is(err, ErrTextTooLarge) {
		t.Fatalf("text of MaxTextSize+1 bytes: %v", err)
	}
	ch.Close()
	re := reopenSelfChat(t, c, pass)
	checkSelfHistory(t, re, []string{text})
}

// The largest record a receive commits fits MaxChatRecordSize, even
// sealed with the smallest e2ee frames (the most overhead per byte): the
// messages of a deliver frame and of every orphan it may open
// (wire.MaxFrameSize + MaxOrphanBytes of MaxTextSize texts, and MaxOrphans
// more), with the receiver states of the frame's bundles and of the
// sessions its messages advance (2 × wire.MaxSendBatch, each of
// e2ee.MaxReceiverStateSize).
func TestChatRecordHoldsLargestBatch(t *testing.T) {
	_, key, msg := storeFixture(t)
	if key.Params().ChunkSize != e2ee.MinBackupChunkSize {
		t.Fatalf("chunk size %d, the test wants the smallest", key.Params().ChunkSize)
	}
	var rec chatRecord
	text := strings.Repeat("x", MaxTextSize)
	seq := uint64(0)
	for range (wire.MaxFrameSize+MaxOrphanBytes)/MaxTextSize + 1 {
		rec.History = append(rec.History, encodeChatMessage(msg(seq, text)))
		seq++
	}
	for range MaxOrphans {
		rec.History = append(rec.History, encodeChatMessage(msg(seq, "")))
		seq++
	}
	for range 2 * wire.MaxSendBatch {
		rec.Receivers = append(rec.Receivers, make([]byte, e2ee.MaxReceiverStateSize))
	}
	sealed, err := sealChatRecord(rec, key)
	if err != nil {
		t.Fatal(err)
	}
	recs, good, err := splitChatLog(sealed)
	if err != nil || len(recs) != 1 || good != len(sealed) {
		t.Fatalf("split: %d records, %d of %d bytes: %v", len(recs), good, len(sealed), err)
	}
	pt, err := openChatRecord(recs[0], key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeChatRecord(pt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.History) != len(rec.History) || len(got.Receivers) != len(rec.Receivers) {
		t.Fatalf("decoded %d messages and %d states", len(got.History), len(got.Receivers))
	}
	t.Logf("record of %d bytes, limit %d", len(sealed)-chatRecordHeader, MaxChatRecordSize)
}

// The outbox, the states of messages and the seen marks replay, and a
// compaction keeps them: a pending message with its sealed envelopes is
// still pending and queued, a delivered one delivered, the seen mark the
// same, and the Local numbers go on from where they were.
func TestChatLogKeepsOutboxStatesAndMarks(t *testing.T) {
	dir, key, msg := storeFixture(t)
	l, st, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(r chatRecord) {
		t.Helper()
		if err := l.append(r); err != nil {
			t.Fatal(err)
		}
		if err := st.apply(r); err != nil {
			t.Fatal(err)
		}
	}
	m0, m1, m2 := msg(0, "delivered"), msg(1, "sealed, waiting for the relays"), msg(2, "not sealed yet")
	m0.Outgoing, m1.Outgoing, m2.Outgoing = true, true, true
	m0.Local, m1.Local, m2.Local = 1, 2, 3
	m0.State, m1.State, m2.State = StatePending, StatePending, StatePending
	commit(chatRecord{History: []chatMessageWire{encodeChatMessage(m0), encodeChatMessage(m1), encodeChatMessage(m2)}, Seq: 3})
	env := wire.Envelope{To: m0.Device, ID: wire.NewEnvelopeID(), Time: testTime, TTL: wire.DefaultTTL, Ciphertext: []byte("sealed bytes")}
	w0, err := encodeOutboxEntry(&outboxEntry{peer: m0.Peer, seq: 0, envs: []wire.Envelope{env}, kinds: []e2ee.EnvelopeKind{e2ee.EnvelopeMessage}})
	if err != nil {
		t.Fatal(err)
	}
	w1 := w0
	w1.Seq = 1
	commit(chatRecord{Outbox: []outboxWire{w0, w1}})
	commit(chatRecord{Done: []doneWire{{Seq: 0, Peer: m0.Peer.Bytes(), State: uint8(StateSent)}}})
	commit(chatRecord{Delivered: []msgRefWire{{Peer: m0.Peer.Bytes(), Device: m0.Device.Bytes(), Seq: 0}}})
	commit(chatRecord{Seen: []seenWire{{Peer: m0.Peer.Bytes(), Local: 2}}})

	check := func(what string, st *chatState) {
		t.Helper()
		h := st.history[m0.Peer]
		if len(h) != 3 || h[0].State != StateDelivered || h[1].State != StatePending || h[2].State != StatePending {
			t.Fatalf("%s: history %+v", what, h)
		}
		if len(st.queue) != 2 || st.queue[0].seq != 1 || st.queue[1].seq != 2 {
			t.Fatalf("%s: queue %+v", what, st.queue)
		}
		if e := st.outbox[1]; e == nil || len(e.envs) != 1 || e.envs[0].ID != env.ID || st.outbox[0] != nil {
			t.Fatalf("%s: outbox %+v", what, st.outbox)
		}
		if st.seen[m0.Peer] != 2 || st.local != 3 || st.seq != 3 {
			t.Fatalf("%s: seen %d, local %d, seq %d", what, st.seen[m0.Peer], st.local, st.seq)
		}
	}
	check("in memory", st)
	l.close()
	l, again, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	check("replayed", again)
	if err := l.compact(again); err != nil {
		t.Fatal(err)
	}
	l.close()
	l, compacted, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	check("compacted", compacted)
}
