package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/wire"
)

// errCrash is what the files of a crashFS return once the crash happened.
var errCrash = errors.New("crash")

// crashFS is a logFS whose writes stop at a chosen step, as if the process
// died there. Each byte written is one step, and so is each sync, rename,
// directory sync, truncation and file creation. Every step before the
// chosen one happens (a write cut by it leaves its first bytes on disk,
// like a torn record); from it on, every call fails with errCrash and
// changes nothing. A crash of the process, not of the machine: what was
// written stays on disk, so syncs only count.
type crashFS struct {
	at      int64 // the step that crashes; -1 for none
	step    int64
	crashed bool
	ops     []crashOp
	logPath string
	files   []*crashFile
}

// crashOp is one call of a run: what it was and the steps it took.
type crashOp struct {
	kind     string
	start, n int64
}

func newCrashFS(at int64) *crashFS { return &crashFS{at: at} }

// install makes l write through c from now on.
func (c *crashFS) install(l *chatLog) {
	c.logPath = l.path
	f := &crashFile{c: c, f: l.f.(*os.File), name: l.path}
	c.files = append(c.files, f)
	l.fs, l.f = c, f
}

// take accounts for an operation of n steps: it returns how many of them
// happen, and errCrash if the crash comes within them.
func (c *crashFS) take(kind string, n int64) (int64, error) {
	if c.crashed {
		return 0, errCrash
	}
	c.ops = append(c.ops, crashOp{kind, c.step, n})
	if c.at >= 0 && c.at < c.step+n {
		done := c.at - c.step
		c.step, c.crashed = c.at, true
		return done, errCrash
	}
	c.step += n
	return n, nil
}

// closeAll closes the real files, once the test dropped the chat: closing
// a descriptor writes nothing.
func (c *crashFS) closeAll() {
	for _, f := range c.files {
		f.f.Close()
	}
}

func (c *crashFS) createTemp(dir, pattern string) (logFile, string, error) {
	if _, err := c.take("create", 1); err != nil {
		return nil, "", err
	}
	f, name, err := osLogFS{}.createTemp(dir, pattern)
	if err != nil {
		return nil, "", err
	}
	cf := &crashFile{c: c, f: f.(*os.File), name: name}
	c.files = append(c.files, cf)
	return cf, name, nil
}

func (c *crashFS) rename(from, to string) error {
	if _, err := c.take("rename", 1); err != nil {
		return err
	}
	if err := os.Rename(from, to); err != nil {
		return err
	}
	for _, f := range c.files {
		if f.name == from {
			f.name = to
		}
	}
	return nil
}

func (c *crashFS) remove(name string) error {
	if c.crashed {
		return errCrash
	}
	return os.Remove(name)
}

func (c *crashFS) syncDir(string) error {
	_, err := c.take("dir sync", 1)
	return err
}

type crashFile struct {
	c    *crashFS
	f    *os.File
	name string
}

// kind is "log" for the log's file, "temp" for a rewrite's new file
// before its rename.
func (f *crashFile) kind() string {
	if f.name == f.c.logPath {
		return "log"
	}
	return "temp"
}

func (f *crashFile) WriteAt(b []byte, off int64) (int, error) {
	n, err := f.c.take(f.kind()+" write", int64(len(b)))
	if n > 0 {
		if _, werr := f.f.WriteAt(b[:n], off); werr != nil {
			return 0, werr
		}
	}
	return int(n), err
}

func (f *crashFile) Truncate(size int64) error {
	if _, err := f.c.take(f.kind()+" truncate", 1); err != nil {
		return err
	}
	return f.f.Truncate(size)
}

func (f *crashFile) Sync() error {
	_, err := f.c.take(f.kind()+" sync", 1)
	return err
}

func (f *crashFile) Close() error {
	if f.c.crashed {
		return errCrash
	}
	return f.f.Close()
}

// crashRun is one run of the crash test's workload on a new home: it
// sends messages to itself until a send fails (the crash) or all went.
type crashRun struct {
	c    *Client
	pass []byte
	fs   *crashFS
	// sent maps the sequence number of each send that returned success to
	// its text.
	sent map[uint64]string
}

const (
	crashMessages    = 24
	crashCompactSize = 2 << 10
)

var crashKDF = e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: 4096}

func crashText(i int) string {
	return fmt.Sprintf("%04d ", i) + strings.Repeat(string(rune('a'+i%26)), 300+i*211%1000)
}

// runUntilCrash runs the workload with a crash at step at (-1: none) and
// drops the chat without closing it.
func runUntilCrash(t *testing.T, at int64) *crashRun {
	t.Helper()
	ch, c, pass := selfChat(t, crashKDF)
	ch.store.compactSize = crashCompactSize
	r := &crashRun{c: c, pass: pass, fs: newCrashFS(at), sent: map[uint64]string{}}
	r.fs.install(ch.store)
	for i := range crashMessages {
		rep, err := ch.Send(t.Context(), ch.self.User, crashText(i))
		if err != nil {
			if !errors.Is(err, errCrash) {
				t.Fatalf("send %d failed without a crash: %v", i, err)
			}
			break
		}
		r.sent[rep.Message.Seq] = rep.Message.Text
	}
	r.fs.closeAll()
	ch.lock.release() // the process ended: the kernel drops its lock
	return r
}

// check reopens the home after the crash: every message whose send
// returned success is in history with its sequence number; no number
// names two messages; the log is whole (no temporary file left); and the
// next send, whose message survives one more reopening, takes a number
// above every one used before.
func (r *crashRun) check(t *testing.T) error {
	ch, err := r.c.OpenChat(r.pass)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	defer ch.Close()
	ownChainFresh(t, ch)
	h := ch.History(ch.self.User)
	inHistory := map[uint64]string{}
	var top uint64
	for i, m := range h {
		if i > 0 && m.Seq <= h[i-1].Seq {
			return fmt.Errorf("history: seq %d after seq %d", m.Seq, h[i-1].Seq)
		}
		inHistory[m.Seq] = m.Text
		top = max(top, m.Seq+1)
	}
	for seq, text := range r.sent {
		got, ok := inHistory[seq]
		switch {
		case !ok:
			return fmt.Errorf("message %d (%.8q), sent, is not in history", seq, text)
		case got != text:
			return fmt.Errorf("seq %d names two messages: %.8q sent, %.8q in history", seq, text, got)
		}
		top = max(top, seq+1)
	}
	if stray, _ := filepath.Glob(filepath.Join(r.c.home.Dir(), chatLogTempPattern)); len(stray) > 0 {
		return fmt.Errorf("temporary files left: %v", stray)
	}
	rep, err := ch.Send(t.Context(), ch.self.User, "after the crash")
	if err != nil {
		return fmt.Errorf("send after the crash: %w", err)
	}
	if rep.Message.Seq < top {
		return fmt.Errorf("send after the crash took seq %d, already used (next free %d)", rep.Message.Seq, top)
	}
	ch.Close()
	again, err := r.c.OpenChat(r.pass)
	if err != nil {
		return fmt.Errorf("second reopen: %w", err)
	}
	defer again.Close()
	h2 := again.History(again.self.User)
	if len(h2) != len(h)+1 || h2[len(h)].Text != "after the crash" || h2[len(h)].Seq != rep.Message.Seq {
		return fmt.Errorf("after the second reopen: %d messages, want %d ending with the one sent after the crash", len(h2), len(h)+1)
	}
	return nil
}

// A crash at any point of the chat store's writes loses no message whose
// send returned, and never lets a sequence number name two messages: the
// workload (messages to oneself that compact the log several times) is
// run once to list its writes, then again with a crash at each boundary
// of each write (before it, inside it, just before its last byte) and at
// random bytes: inside appends (a torn record), inside a rewrite's
// temporary file, between its sync and its rename, between the rename and
// the directory sync, and after.
func TestChatCrashKeepsMessagesAndSequence(t *testing.T) {
	dry := runUntilCrash(t, -1)
	if err := dry.check(t); err != nil {
		t.Errorf("without a crash: %v", err)
	}
	total := dry.fs.step
	rng := mrand.New(mrand.NewPCG(1, 2))
	points := map[int64]string{}
	kinds := map[string]int{}
	for _, op := range dry.fs.ops {
		kinds[op.kind]++
		points[op.start] = "before " + op.kind
		if op.n > 2 {
			points[op.start+1+rng.Int64N(op.n-2)] = "inside " + op.kind
			points[op.start+op.n-1] = "last byte of " + op.kind
		}
	}
	for _, want := range []string{"log write", "log sync", "create", "temp write", "temp sync", "rename", "dir sync"} {
		if kinds[want] == 0 {
			t.Fatalf("the workload has no %q (ops: %v): it no longer covers that crash point", want, kinds)
		}
	}
	if kinds["rename"] < 3 {
		t.Fatalf("the workload compacts %d times, the test needs at least 3", kinds["rename"])
	}
	for len(points) < 240 {
		at := rng.Int64N(total)
		if _, ok := points[at]; !ok {
			points[at] = "random step"
		}
	}
	order := slices.Sorted(maps.Keys(points))
	t.Logf("%d crash points over %d steps (%v)", len(order), total, kinds)
	failed := 0
	for _, at := range order {
		r := runUntilCrash(t, at)
		if !r.fs.crashed {
			t.Fatalf("crash point %d (%s) not reached", at, points[at])
		}
		if err := r.check(t); err != nil {
			if failed++; failed <= 5 {
				t.Errorf("crash at step %d of %d (%s), %d sends returned: %v", at, total, points[at], len(r.sent), err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d crash points lose a message or reuse a sequence number", failed, len(order))
	}
}

// shortWriteFile is a log file whose next write stops halfway with an
// error (a full disk), the process going on.
type shortWriteFile struct {
	*os.File
	fail bool
}

var errDiskFull = errors.New("disk full")

func (f *shortWriteFile) WriteAt(b []byte, off int64) (int, error) {
	if f.fail {
		f.fail = false
		n, _ := f.File.WriteAt(b[:len(b)/2], off)
		return n, errDiskFull
	}
	return f.File.WriteAt(b, off)
}

// A write that fails halfway leaves bytes in the file; they are cut and
// the next record is written in their place, so the log replays whole
// with every record that was acknowledged.
func TestChatLogAppendAfterFailedWrite(t *testing.T) {
	dir, key, msg := storeFixture(t)
	l, st, err := openChatLog(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	f := &shortWriteFile{File: l.f.(*os.File)}
	l.f = f
	rec := func(seq uint64, text string) chatRecord {
		return chatRecord{History: []chatMessageWire{encodeChatMessage(msg(seq, text))}, Seq: seq + 1}
	}
	if err := l.append(rec(0, "kept")); err != nil {
		t.Fatal(err)
	}
	f.fail = true
	// Half of a long record reaches the file: more than the next one.
	if err := l.append(rec(1, strings.Repeat("failed ", 1000))); !errors.Is(err, errDiskFull) {
		t.Fatalf("failed write: %v", err)
	}
	if err := l.append(rec(1, "written after the failure")); err != nil {
		t.Fatal(err)
	}
	l.close()
	l, st, err = openChatLog(dir, key)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l.close()
	h := st.history[msg(0, "").Peer]
	if len(h) != 2 || h[0].Text != "kept" || h[1].Text != "written after the failure" || st.seq != 2 {
		t.Fatalf("replayed %d messages, seq %d", len(h), st.seq)
	}
}

// Messages whose key bundle has not come are held up to MaxOrphanBytes
// (and MaxOrphans): the batch that opens them all is then one record the
// store holds, and memory stays bounded. The others stay unacknowledged
// on the relays.
func TestChatOrphansBounded(t *testing.T) {
	ch, _, _ := openTestChat(t)
	st, err := ch.c.home.State()
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := savedChain(st)
	if err != nil {
		t.Fatal(err)
	}
	to, _ := own.Lookup(ch.self.Device)
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	peer, _, err := ident.DecodeChain(g.UserID(), [][]byte{g.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e2ee.NewSenderSession(keys, peer.User(), e2ee.DirectConversationID(peer.User(), ch.self.User), []ident.DeviceSet{peer, own}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("o", MaxTextSize)
	var envs []wire.Envelope
	for i := range MaxOrphanBytes/MaxTextSize + 8 {
		pt, err := storeEnc.Marshal(chatPayload{To: ch.self.User.Bytes(), Seq: uint64(i), Sent: time.Now().UnixMilli(), Text: text})
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Encrypt(keys.Signing, pt)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := e2ee.SealEnvelope(to, e2ee.EnvelopeMessage, peer.User(), m)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, wire.Envelope{To: ch.self.Device, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: wire.DefaultTTL, Ciphertext: ct})
	}
	// Every message waits for its bundle: nothing is acknowledged, so no
	// connection is needed.
	if err := ch.receive(t.Context(), nil, envs, nil); err != nil {
		t.Fatal(err)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	held := 0
	for _, o := range ch.orphans {
		held += len(o.body)
	}
	if held > MaxOrphanBytes || len(ch.orphans) == 0 {
		t.Fatalf("%d orphans of %d bytes held, limit %d bytes", len(ch.orphans), held, MaxOrphanBytes)
	}
}

// A batch whose record cannot be written is neither acknowledged nor
// applied: no session moved, so when the node delivers it again (after
// the connection that failed is replaced) it opens again and the message
// is stored once.
func TestChatReceiveAfterFailedWrite(t *testing.T) {
	nw := testnet.New(t, 1)
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, _ := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[0].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob", func(UserInfo) bool { return true })

	chB, err := bob.OpenChat(passB)
	if err != nil {
		t.Fatal(err)
	}
	f := &shortWriteFile{File: chB.store.f.(*os.File), fail: true}
	chB.store.f = f
	inB := newInbox(chB)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); chB.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		chB.Close()
	}()

	chA, _, _ := running(t, alice, passA)
	mustSend(t, chA, idB.User, "stored at the second delivery", 1)
	if got := inB.wait(t, 1); got[0].Text != "stored at the second delivery" {
		t.Fatalf("bob got %q", got[0].Text)
	}
	chB.mu.Lock()
	failed := !f.fail
	chB.mu.Unlock()
	if !failed {
		t.Fatal("bob's store never failed a write: the test tested nothing")
	}
	cancel()
	<-done
	chB.Close()
	again, err := bob.OpenChat(passB)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if h := again.History(chA.self.User); len(h) != 1 || h[0].Text != "stored at the second delivery" {
		t.Fatalf("bob's history after reopening: %d messages", len(h))
	}
}
