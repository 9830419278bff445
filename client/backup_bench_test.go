package client

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/e2ee"
)

// EnvBenchBackupMB sets the history size of the backup benchmarks in MiB
// (1024 for the 1 GiB of the design's target); the default keeps
// "go test -bench ." short.
const (
	EnvBenchBackupMB     = "VOLO_BENCH_BACKUP_MB"
	defaultBenchBackupMB = 64
)

func benchBackupBytes(b *testing.B) int {
	mb := defaultBenchBackupMB
	if s := os.Getenv(EnvBenchBackupMB); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive number of MiB", EnvBenchBackupMB, s)
		}
		mb = n
	}
	return mb << 20
}

// benchWords make message texts that compress about as well as chat does.
var benchWords = strings.Fields(`the a to and of i you it is in that we for on
this be have are with not was but so what can just do at if my me your
they all will get about know like one now there time out up think good
see when then could really yes no well okay tomorrow tonight later meeting
dinner train late sorry thanks great love home work office weekend photo
call message phone coffee 7pm 8:30 monday friday 🙂 😂 👍 lol haha`)

// fillHistory puts about size bytes of text into ch's history (in memory:
// the backup reads it from there), half sent by the user and half by one
// peer, messages of 16 to 1,000 bytes. It returns the text bytes.
func fillHistory(b testing.TB, ch *Chat, size int) int {
	b.Helper()
	peer, peerDev := testUser(b)
	r := rand.New(rand.NewPCG(1, 2))
	at := time.UnixMilli(1_700_000_000_000).UTC()
	var sb strings.Builder
	total := 0
	ch.mu.Lock()
	defer ch.mu.Unlock()
	h := ch.st.history[peer]
	for i := 0; total < size; i++ {
		n := 16 + r.IntN(985)
		sb.Reset()
		for sb.Len() < n {
			sb.WriteString(benchWords[r.IntN(len(benchWords))])
			sb.WriteByte(' ')
		}
		m := ChatMessage{Peer: peer, Sent: at, Received: at, Text: sb.String()}
		if i%2 == 0 {
			m.From, m.Device, m.Seq, m.Outgoing = ch.self.User, ch.self.Device, uint64(i/2), true
		} else {
			m.From, m.Device, m.Seq = peer, peerDev, uint64(i/2)
		}
		h = append(h, m)
		total += len(m.Text)
		at = at.Add(time.Second)
	}
	ch.st.history[peer] = h
	return total
}

// backupBench is a 3-node network (every node a storage node, 3
// replicas, write quorum 2, quotas out of the way) with a user on node 0
// and her second device on node 1.
func backupBench(b *testing.B) (alice *Client, chA *Chat, alice2 *Client, pass2 []byte) {
	b.Helper()
	nw := backupNet(b, 3, func(_ int, c *backupstore.Config) {
		c.QuotaBytes, c.QuotaChunks = 1<<40, 1<<30
	})
	pass := []byte("bench device")
	pass2 = pass // linkBench gives both devices one passphrase
	// Homes with a cheap Argon2id but the default frame size, which the
	// chat store's records are sealed with (the tests' 64-byte frames
	// would make the store, not the backup, the cost).
	mk := func(url string) *Client {
		c, err := New(Options{Home: filepath.Join(b.TempDir(), "home"), Node: url, KDF: backupKDF})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	alice = mk(nw.Nodes[0].APIURL())
	if _, err := alice.Register(b.Context(), "", nil, pass); err != nil {
		b.Fatal(err)
	}
	alice2 = mk(nw.Nodes[1].APIURL())
	linkBench(b, alice, alice2, pass2)
	var err error
	if chA, err = alice.OpenChat(pass); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { chA.Close() })
	return alice, chA, alice2, pass2
}

var benchBackupPassword = []byte("a benchmark backup password")

// BenchmarkBackup1GiB: pack (archive, DEFLATE, encryption with the
// default Argon2id cost, 1 MiB chunks), preflight, upload to 3 replicas
// and publish, for a history of $VOLO_BENCH_BACKUP_MB MiB of text.
// MB/s is history text per second.
func BenchmarkBackup1GiB(b *testing.B) {
	_, chA, _, _ := backupBench(b)
	n := fillHistory(b, chA, benchBackupBytes(b))
	b.SetBytes(int64(n))
	var res BackupResult
	cpu := processCPU()
	for b.Loop() {
		var err error
		if res, err = chA.Backup(b.Context(), benchBackupPassword, BackupOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((processCPU()-cpu).Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(res.Pointer.Size)/float64(n), "backup/history")
}

// BenchmarkRestore1GiB: find the pointer, download the chunks through
// another node (each checked against its CID), decrypt, decompress,
// decode and import into an empty chat store (written with fsync), for a
// backup of $VOLO_BENCH_BACKUP_MB MiB of text. MB/s is history text per
// second.
func BenchmarkRestore1GiB(b *testing.B) {
	_, chA, alice2, pass2 := backupBench(b)
	n := fillHistory(b, chA, benchBackupBytes(b))
	if _, err := chA.Backup(b.Context(), benchBackupPassword, BackupOptions{}); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(alice2.Home().Dir(), ChatLogFile)
	b.SetBytes(int64(n))
	var fetch, imp, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := os.Remove(logPath); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
		ch2, err := alice2.OpenChat(pass2)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu0 := processCPU()
		start := time.Now()
		var downloaded time.Time
		res, err := ch2.Restore(b.Context(), benchBackupPassword, BackupOptions{Progress: func(p BackupProgress) {
			if p.Done == p.Total {
				downloaded = time.Now()
			}
		}})
		fetch += downloaded.Sub(start)
		imp += time.Since(downloaded)
		cpu += processCPU() - cpu0
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if res.Imported != res.Messages {
			b.Fatalf("imported %d of %d", res.Imported, res.Messages)
		}
		ch2.Close()
		b.StartTimer()
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(fetch.Seconds()/float64(b.N), "download+decode-s/op")
	b.ReportMetric(imp.Seconds()/float64(b.N), "import-s/op")
}

// packBench packs ch's history into memory as a backup does (default
// Argon2id cost and frames), returning the backup stream.
func packBench(b *testing.B, ch *Chat, c *Client) []byte {
	b.Helper()
	st, err := c.Home().State()
	if err != nil {
		b.Fatal(err)
	}
	kdf := e2ee.DefaultBackupParams()
	peers, messages, _ := ch.backupBound(kdf)
	var res BackupResult
	var out bytes.Buffer
	_, err = ch.pack(b.Context(), benchBackupPassword, kdf, st, peers, newProgress(nil, PhasePack, int64(messages)), &res, func(c pendingChunk) error {
		out.Write(c.data)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return out.Bytes()
}

// BenchmarkBackupPack is the client's share of a backup, with no node:
// the archive, Zstandard, encryption (default Argon2id cost) and the
// chunks' CIDs, for $VOLO_BENCH_BACKUP_MB MiB of history, the chunks
// dropped. MB/s is history text per second.
func BenchmarkBackupPack(b *testing.B) {
	ch, c, _ := openTestChatKDF(b, backupKDF)
	n := fillHistory(b, ch, benchBackupBytes(b))
	st, err := c.Home().State()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(n))
	kdf := e2ee.DefaultBackupParams()
	var size int64
	cpu := processCPU()
	for b.Loop() {
		peers, messages, _ := ch.backupBound(kdf)
		var res BackupResult
		size = 0
		_, err := ch.pack(b.Context(), benchBackupPassword, kdf, st, peers, newProgress(nil, PhasePack, int64(messages)), &res, func(c pendingChunk) error {
			size += int64(len(c.data))
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((processCPU()-cpu).Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(size)/float64(n), "backup/history")
}

// BenchmarkRestoreFromMemory is the client's share of a restore, with no
// node: decrypt, decompress and decode a backup held in memory, then
// import it into the empty chat store of the same user's home (written
// with fsync), for $VOLO_BENCH_BACKUP_MB MiB of history. MB/s is history
// text per second.
func BenchmarkRestoreFromMemory(b *testing.B) {
	ch, c, pass := openTestChatKDF(b, backupKDF)
	n := fillHistory(b, ch, benchBackupBytes(b))
	data := packBench(b, ch, c)
	ch.Close() // its history was only in memory: the store is empty
	logPath := filepath.Join(c.Home().Dir(), ChatLogFile)
	b.SetBytes(int64(n))
	var decode, imp, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := os.Remove(logPath); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
		ch2, err := c.OpenChat(pass)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu0 := processCPU()
		start := time.Now()
		a, err := decodeBackup(bytes.NewReader(data), benchBackupPassword)
		if err != nil {
			b.Fatal(err)
		}
		decoded := time.Now()
		added, err := ch2.importArchive(a)
		if err != nil {
			b.Fatal(err)
		}
		decode += decoded.Sub(start)
		imp += time.Since(decoded)
		cpu += processCPU() - cpu0
		b.StopTimer()
		if added != a.Messages {
			b.Fatalf("imported %d of %d", added, a.Messages)
		}
		ch2.Close()
		b.StartTimer()
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(decode.Seconds()/float64(b.N), "decode-s/op")
	b.ReportMetric(imp.Seconds()/float64(b.N), "import-s/op")
}
