package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// backupKDF is a cheap Argon2id cost with the default frame size.
var backupKDF = e2ee.BackupParams{Time: 1, MemoryKiB: 64, Threads: 1, ChunkSize: e2ee.DefaultBackupChunkSize}

// backupNet starts n nodes that all store backups (3 replicas, write
// quorum 2, repair and GC left alone), with options, and waits until every
// node sees the storage nodes a chunk goes to.
func backupNet(t testing.TB, n int, edit func(i int, c *backupstore.Config), opts ...testnet.Option) *testnet.Network {
	t.Helper()
	opts = append([]testnet.Option{testnet.Configure(func(i int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
		cfg.Backup.Enabled = true
		cfg.Backup.Replicas, cfg.Backup.WriteQuorum = 3, 2
		cfg.Backup.RepairInterval = config.Duration(24 * time.Hour)
		cfg.Backup.GCInterval = config.Duration(24 * time.Hour)
		// Linked devices that never run get thousands of messages here
		// without ever having given anyone their delivery key: they are
		// strangers to the relays' requests quota, which these tests are
		// not about.
		cfg.Relay.RequestsCap = 1 << 20
		if edit != nil {
			edit(i, &cfg.Backup)
		}
	})}, opts...)
	nw := testnet.New(t, n, opts...)
	probe := wire.ChunkCID([]byte("probe"))
	for i, nd := range nw.Nodes {
		tstest.WaitFor(t, e2eTimeout, func() error {
			peers, err := nd.Backup().Holders(t.Context(), probe)
			if err == nil && len(peers) == min(3, n) {
				return nil
			}
			return fmt.Errorf("node %d sees storage nodes %v (%v)", i, peers, err)
		})
	}
	return nw
}

// linkedDevice links a new device of a's user through the node at url.
func linkedDevice(t *testing.T, a *Client, passA []byte, url string, pass []byte) *Client {
	t.Helper()
	c := newTestClient(t, url, nil)
	link(t, a, passA, c, pass)
	return c
}

// openChat opens c's chat store for the length of the test.
func openChat(t *testing.T, c *Client, pass []byte) *Chat {
	t.Helper()
	ch, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

// histories returns every conversation of ch.
func histories(ch *Chat) map[ident.UserID][]ChatMessage {
	out := map[ident.UserID][]ChatMessage{}
	for _, p := range ch.Conversations() {
		out[p] = ch.History(p)
	}
	return out
}

// sameHistories fails unless got holds exactly the conversations of want,
// every message equal (as stored: times in milliseconds).
func sameHistories(t *testing.T, got, want map[ident.UserID][]ChatMessage) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d conversations, want %d", len(got), len(want))
	}
	for p, w := range want {
		sameHistory(t, got[p], w)
	}
}

func countMessages(h map[ident.UserID][]ChatMessage) int {
	n := 0
	for _, ms := range h {
		n += len(ms)
	}
	return n
}

// chatBoth has a and b (running) send n messages each to the other, at
// the same time, and waits until each got the other's; every 50th
// message of a is large (133 KiB that do not compress).
func chatBoth(t *testing.T, chA *Chat, inA *inbox, idA Identity, chB *Chat, inB *inbox, idB Identity, n int) {
	t.Helper()
	// A guard against a hang, not a speed limit: with -race on a machine
	// busy compiling other packages the 2n messages took over 6 minutes.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	send := func(ch *Chat, to ident.UserID, name string) {
		var waits []func(context.Context) (SendReport, error)
		for i := range n {
			text := fmt.Sprintf("%s %04d", name, i)
			if name == "alice" && i%50 == 7 {
				raw := make([]byte, 100<<10)
				rand.Read(raw)
				text += " " + base64.StdEncoding.EncodeToString(raw) // does not compress
			}
			w, _, err := ch.SendAsync(ctx, to, text)
			if err != nil {
				errs <- err
				return
			}
			waits = append(waits, w)
		}
		for i, w := range waits {
			rep, err := w(ctx)
			if errors.Is(err, ErrNotSent) {
				// The node answered later than SendTimeout (a machine busy
				// with -race and other packages): the outbox sends the
				// message again every RetryInterval until a node takes it.
				// Its arrival is what inbox.wait counts below.
				if rep.Message, err = waitSent(ctx, ch, rep.Message); err == nil {
					continue
				}
			}
			if err != nil || rep.Devices < 1 {
				errs <- fmt.Errorf("%s's message %d: %+v %w", name, i, rep, err)
				return
			}
		}
	}
	wg.Go(func() { send(chA, idB.User, "alice") })
	wg.Go(func() { send(chB, idA.User, "bob") })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	inA.wait(t, n)
	inB.wait(t, n)
}

// waitSent waits until m leaves the outbox and returns it as it ended: an
// error if it failed or ctx ended first.
func waitSent(ctx context.Context, ch *Chat, m ChatMessage) (ChatMessage, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		cur := ch.message(m)
		switch cur.State {
		case StateSent:
			return cur, nil
		case StateFailed:
			return cur, fmt.Errorf("failed: %s", cur.Failure)
		}
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("still %v: %w", cur.State, ctx.Err())
		case <-tick.C:
		}
	}
}

// holdersOf returns the indexes of the running nodes that hold c.
func holdersOf(t *testing.T, nw *testnet.Network, c cid.Cid, skip ...int) []int {
	t.Helper()
	var out []int
	for i, nd := range nw.Nodes {
		if slices.Contains(skip, i) {
			continue
		}
		if ok, err := nd.Backup().Has(c); err != nil {
			t.Fatal(err)
		} else if ok {
			out = append(out, i)
		}
	}
	return out
}

// manifestOf fetches and decodes the manifest rec names, through c.
func manifestOf(t *testing.T, c *Client) wire.Manifest {
	t.Helper()
	rec, err := c.ownPointer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.fetchManifest(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// corruptingTransport flips a byte of every full-size chunk a node
// serves (the manifest passes).
type corruptingTransport struct{ base http.RoundTripper }

func (c corruptingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/v1/backup/chunks/") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) == BackupChunkSize {
		body[len(body)/2] ^= 0x01
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// On 5 nodes: Alice and Bob chat 2×1,000 messages (some large); Alice
// backs up; her new device, linked through another node, restores the
// identical history. A third device: a wrong password and chunks
// corrupted on the way both fail with nothing imported; with a storage
// node holding chunks crashed, its restore succeeds. Finally a newer
// backup whose chunk is tampered on every holder's disk is refused and
// the third device's history stays as it was.
func TestBackupRestoreFiveNodes(t *testing.T) {
	nw := backupNet(t, 5, nil)
	passA, passB := []byte("alice device"), []byte("bob device")
	backupPW := []byte("alice's backup password")
	alice, idA := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[1].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob on node 0", func(UserInfo) bool { return true })
	waitUser(t, bob, idA.User, "alice on node 1", func(UserInfo) bool { return true })

	// The new devices are linked first, so that the history sent later
	// does not reach them: all they get comes from the backup.
	passA2, passA3 := []byte("alice device 2"), []byte("alice device 3")
	alice2 := linkedDevice(t, alice, passA, nw.Nodes[2].APIURL(), passA2)
	alice3 := linkedDevice(t, alice, passA, nw.Nodes[4].APIURL(), passA3)
	waitUser(t, bob, idA.User, "alice's three devices on node 1", func(i UserInfo) bool { return len(i.Devices) == 3 })

	chA, inA, _ := running(t, alice, passA)
	chB, inB, _ := running(t, bob, passB)
	const n = 1000
	chatBoth(t, chA, inA, idA, chB, inB, idB, n)
	want := histories(chA)
	if got := countMessages(want); got != 2*n {
		t.Fatalf("alice's history holds %d messages, want %d", got, 2*n)
	}

	var phases []BackupPhase
	res, err := chA.Backup(t.Context(), backupPW, BackupOptions{KDF: backupKDF, Progress: func(p BackupProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 2*n || res.Contacts != 1 || res.Chunks < 2 || res.MinReplicas < 2 {
		t.Fatalf("backup: %+v", res)
	}
	t.Logf("backup of %d messages: %d bytes in %d chunks, at least %d replicas", res.Messages, res.Pointer.Size, res.Chunks, res.MinReplicas)
	// The quota is ample: packed and uploaded in one pipeline, one phase.
	if !slices.Equal(phases, []BackupPhase{PhasePack}) {
		t.Fatalf("progress phases %v", phases)
	}
	if entries, _ := filepath.Glob(filepath.Join(alice.Home().Dir(), ".backup-*")); len(entries) != 0 {
		t.Fatalf("spool files left: %v", entries)
	}

	// The new device restores through node 3 (not the one it talks to).
	a2, err := New(Options{Home: alice2.Home().Dir(), Node: nw.Nodes[3].APIURL(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	ch2 := openChat(t, a2, passA2)
	var down []BackupProgress
	rr, err := ch2.Restore(t.Context(), backupPW, BackupOptions{Progress: func(p BackupProgress) { down = append(down, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Messages != 2*n || rr.Imported != 2*n || !rr.Pointer.Manifest.Equals(res.Pointer.Manifest) {
		t.Fatalf("restore: %+v", rr)
	}
	if last := down[len(down)-1]; last.Phase != PhaseDownload || last.Done != last.Total || last.Total != int64(res.Pointer.Size) {
		t.Fatalf("last progress %+v, backup of %d bytes", last, res.Pointer.Size)
	}
	sameHistories(t, histories(ch2), want)
	ch2.Close()
	// The restored history is in the device's store: reopened, the same.
	sameHistories(t, histories(openChat(t, a2, passA2)), want)

	// Status: the pointer, and every chunk on 3 storage nodes.
	st, err := alice3.BackupStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Pointer.Manifest.Equals(res.Pointer.Manifest) || st.Chunks != res.Chunks || st.ManifestReplicas != 3 || st.MinReplicas != 3 || st.Sampled || len(st.Checked) != res.Chunks {
		t.Fatalf("status: %+v", st)
	}

	// Device 3: a wrong password imports nothing.
	ch3 := openChat(t, alice3, passA3)
	logPath := filepath.Join(alice3.Home().Dir(), ChatLogFile)
	logBefore, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch3.Restore(t.Context(), []byte("not alice's password"), BackupOptions{}); !errors.Is(err, ErrBackupWrongPassword) || !errors.Is(err, e2ee.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	} else if !strings.Contains(err.Error(), "wrong password or damaged backup (nothing imported)") {
		t.Fatalf("wrong password: unclear error %q", err)
	}
	// Chunks corrupted on the way: the client detects it, nothing imported.
	bad, err := New(Options{Home: alice3.Home().Dir(), Node: nw.Nodes[4].APIURL(), KDF: testKDF,
		HTTPClient: &http.Client{Transport: corruptingTransport{http.DefaultTransport}}})
	if err != nil {
		t.Fatal(err)
	}
	ch3.Close() // one program at a time opens a device's chat
	ch3bad := openChat(t, bad, passA3)
	if _, err := ch3bad.Restore(t.Context(), backupPW, BackupOptions{}); !errors.Is(err, ErrBackupDamaged) || !errors.Is(err, wire.ErrBadChunk) {
		t.Fatalf("corrupted chunks: %v", err)
	}
	ch3bad.Close()
	ch3 = openChat(t, alice3, passA3)
	if len(ch3.Conversations()) != 0 {
		t.Fatalf("a failed restore imported %d conversations", len(ch3.Conversations()))
	}
	if logAfter, _ := os.ReadFile(logPath); !bytes.Equal(logBefore, logAfter) {
		t.Fatal("a failed restore changed the chat store")
	}

	// A storage node holding the first chunk crashes (not node 0, Alice's,
	// nor node 4, device 3's): the restore still succeeds.
	m := manifestOf(t, alice3)
	holders := holdersOf(t, nw, m.Chunks[0].CID)
	crash := -1
	for _, h := range holders {
		if h != 0 && h != 4 {
			crash = h
			break
		}
	}
	if crash < 0 {
		t.Fatalf("chunk 0 is held by %v only", holders)
	}
	nw.HardStop(crash)
	t.Logf("chunk 0 held by nodes %v; node %d crashed", holders, crash)
	rr, err = ch3.Restore(t.Context(), backupPW, BackupOptions{Parallel: 3})
	if err != nil {
		t.Fatalf("restore with node %d down: %v", crash, err)
	}
	if rr.Imported != 2*n {
		t.Fatalf("restore with a node down imported %d", rr.Imported)
	}
	sameHistories(t, histories(ch3), want)

	// A newer backup with more messages; one of its chunks is tampered on
	// every node that holds it. Device 3 refuses it and keeps its history.
	for i := range 3 {
		if _, err := chA.Send(t.Context(), idB.User, fmt.Sprintf("after the first backup %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	res2, err := chA.Backup(t.Context(), backupPW, BackupOptions{KDF: backupKDF})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := alice3.ownPointer(t.Context()); err != nil || !rec.Pointer.Manifest.Equals(res2.Pointer.Manifest) {
		t.Fatalf("device 3 does not see the new backup: %v", err)
	}
	m2 := manifestOf(t, alice3)
	victim := m2.Chunks[len(m2.Chunks)/2].CID
	tampered := 0
	for _, h := range holdersOf(t, nw, victim, crash) {
		key := append([]byte("backup/c/"), victim.Bytes()...)
		junk := make([]byte, m2.Chunks[len(m2.Chunks)/2].Size)
		rand.Read(junk)
		if err := nw.Nodes[h].Store().Prefix("").Put(key, junk); err != nil {
			t.Fatal(err)
		}
		tampered++
	}
	if tampered < 2 {
		t.Fatalf("chunk %s is held by %d running nodes", victim, tampered)
	}
	if _, err := ch3.Restore(t.Context(), backupPW, BackupOptions{}); !errors.Is(err, ErrBackupDamaged) {
		t.Fatalf("tampered chunk: %v", err)
	}
	sameHistories(t, histories(ch3), want)
}

// Canary: after a backup and a restore, no file in any node's data
// directory and no line of their debug logs holds a text of the history
// or the backup password, in any usual encoding. Positive controls: the
// restored history holds the texts, and the nodes' directories hold the
// backup's chunks (the search looks where the data is).
func TestBackupCanaryNeverOnNodes(t *testing.T) {
	logs := &syncWriter{}
	nw := backupNet(t, 3, nil, testnet.LogLevel(slog.LevelDebug), testnet.LogTo(logs))
	passA, passA2 := []byte("canary device 1"), []byte("canary device 2")
	backupPW := []byte("canary-backup-password-c81f3a")
	alice, idA := register(t, nw.Nodes[0].APIURL(), passA)
	chA := openChat(t, alice, passA)
	// Notes to herself while she has one device: in her history, never
	// sent to any node.
	const canary, canary2 = "canary-backup-history-4e1d77b0", "canary-backup-second-93aa05"
	for _, text := range []string{canary, "some other note", canary2} {
		if rep, err := chA.Send(t.Context(), idA.User, text); err != nil || rep.Devices != 0 {
			t.Fatalf("note: %+v %v", rep, err)
		}
	}
	alice2 := linkedDevice(t, alice, passA, nw.Nodes[1].APIURL(), passA2)
	res, err := chA.Backup(t.Context(), backupPW, BackupOptions{KDF: backupKDF})
	if err != nil {
		t.Fatal(err)
	}
	ch2 := openChat(t, alice2, passA2)
	if _, err := ch2.Restore(t.Context(), backupPW, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	// Positive control: the restored history holds the canaries.
	h := ch2.History(idA.User)
	if len(h) != 3 || h[0].Text != canary || h[2].Text != canary2 {
		t.Fatalf("restored history: %+v", h)
	}
	chunk, err := alice2.API().GetChunk(t.Context(), manifestOf(t, alice2).Chunks[0].CID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nw.Nodes {
		nw.Stop(i)
	}
	secrets := map[string][]byte{"canary": []byte(canary), "second canary": []byte(canary2), "backup password": backupPW}
	if found := findIn(logs.Bytes(), secrets); len(found) > 0 {
		t.Errorf("node logs hold %v", found)
	}
	held := 0
	for i, cfg := range nw.Configs {
		if found := grepDir(t, cfg.DataDir, secrets); len(found) > 0 {
			t.Errorf("node %d's data holds %v", i, found)
		}
		// 32 bytes from the middle: ciphertext, stored as it is even in a
		// block that badger compresses (nothing in it repeats).
		if found := grepDir(t, cfg.DataDir, map[string][]byte{"chunk": chunk[len(chunk)/2 : len(chunk)/2+32]}); len(found) > 0 {
			held++
		}
	}
	if held == 0 {
		t.Fatalf("positive control: no node's data directory holds the backup's first chunk (manifest %s)", res.Pointer.Manifest)
	}
	// The homes hold no plaintext either (the spool was ciphertext and is gone).
	for _, c := range []*Client{alice, alice2} {
		if found := grepDir(t, c.Home().Dir(), secrets); len(found) > 0 {
			t.Errorf("home holds %v", found)
		}
	}
}

// Over quota: a backup larger than the storage nodes allow a user is
// refused at the preflight with a clear error; no pointer is published and
// no node stores anything of the user. Positive control: another user's
// history, larger than the quota but compressing well below it, is backed
// up (through the spool and the exact preflight) and charged.
func TestBackupOverQuota(t *testing.T) {
	const quota = 256 << 10
	nw := backupNet(t, 3, func(_ int, c *backupstore.Config) { c.QuotaBytes = quota })
	pass := []byte("quota device")
	backupPW := []byte("quota backup password")
	alice, idA := register(t, nw.Nodes[0].APIURL(), pass)
	carol, idC := register(t, nw.Nodes[1].APIURL(), pass)
	chA := openChat(t, alice, pass)
	// Random text does not compress: about 600 KiB of backup.
	for range 3 {
		b := make([]byte, 150<<10)
		rand.Read(b)
		if _, err := chA.Send(t.Context(), idA.User, base64.StdEncoding.EncodeToString(b)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := chA.Backup(t.Context(), backupPW, BackupOptions{KDF: backupKDF})
	if !errors.Is(err, ErrBackupOverQuota) || !strings.Contains(err.Error(), fmt.Sprintf("this node allows %d bytes", quota)) {
		t.Fatalf("over quota: %v", err)
	}
	if _, err := alice.BackupStatus(t.Context()); !errors.Is(err, ErrNoBackup) || !strings.Contains(err.Error(), "no backup found for user "+idA.User.String()) {
		t.Fatalf("status after a refused backup: %v", err)
	}
	for i, nd := range nw.Nodes {
		if u, err := nd.Backup().Usage(idA.User); err != nil || u.Bytes != 0 || u.Chunks != 0 {
			t.Fatalf("node %d holds %+v of alice (%v)", i, u, err)
		}
		if _, err := nd.Backup().Pointer(t.Context(), idA.User); !errors.Is(err, backupstore.ErrNotFound) {
			t.Fatalf("node %d: alice's pointer: %v", i, err)
		}
	}

	chC := openChat(t, carol, pass)
	for i := range 4 {
		if _, err := chC.Send(t.Context(), idC.User, strings.Repeat(fmt.Sprintf("note %d, said again. ", i), 5000)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, bound := chC.backupBound(backupKDF); bound <= quota {
		t.Fatalf("carol's history is bounded by %d bytes, want more than the quota", bound)
	}
	var phases []BackupPhase
	if _, err := chC.Backup(t.Context(), backupPW, BackupOptions{KDF: backupKDF, Progress: func(p BackupProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}}); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	if !slices.Equal(phases, []BackupPhase{PhasePack, PhaseUpload}) {
		t.Fatalf("phases %v, want packing into the spool, then uploading", phases)
	}
	charged := 0
	for _, nd := range nw.Nodes {
		if u, _ := nd.Backup().Usage(idC.User); u.Chunks > 0 {
			charged++
		}
	}
	if charged < 2 {
		t.Fatalf("positive control: carol's backup is charged on %d nodes", charged)
	}
	// A too short password is refused before anything happens.
	if _, err := chC.Backup(t.Context(), []byte("short"), BackupOptions{KDF: backupKDF}); !errors.Is(err, ErrBackupPasswordTooShort) {
		t.Fatalf("short password: %v", err)
	}
}
