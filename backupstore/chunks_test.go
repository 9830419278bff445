package backupstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// openChunkStore opens a chunk store on a synced badger store in dir.
func openChunkStore(t *testing.T, dir string, quotaBytes, quotaChunks uint64) (*chunkStore, *store.DB) {
	t.Helper()
	db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	cs := newChunkStore(db.Prefix("b/"), quotaBytes, quotaChunks)
	cs.start()
	return cs, db
}

// testUser is a user with one device, as chunk metadata names them.
type testUser struct {
	id     ident.UserID
	device ident.DeviceID
}

func newTestUser(t testing.TB) testUser {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return testUser{g.UserID(), k.ID()}
}

// meta is the metadata of a chunk of size bytes that u uploads.
func (u testUser) meta(size int) chunkMeta {
	return chunkMeta{Owner: u.id, Device: u.device, Size: uint64(size), Kind: kindChunk, Sig: make([]byte, ident.SignatureSize), Entry: "entry"}
}

func testChunks(n, size int) ([]cid.Cid, [][]byte) {
	cids, data := make([]cid.Cid, n), make([][]byte, n)
	for i := range n {
		data[i] = make([]byte, size)
		rand.Read(data[i])
		cids[i] = wire.ChunkCID(data[i])
	}
	return cids, data
}

// holdFirstCommit makes the committer's first batch wait until the rest
// of total writes are queued behind it, so that the next batch takes them
// all: how a test sees that writes arriving during a commit share the
// next one. batches returns the sizes of the commits so far.
func holdFirstCommit(cs *chunkStore, total int) (batches func() []int) {
	var mu sync.Mutex
	var sizes []int
	cs.batched = func(n int) {
		mu.Lock()
		first := len(sizes) == 0
		sizes = append(sizes, n)
		mu.Unlock()
		if first {
			// A hang guard: past it the batches are simply not shared,
			// which the test then reports.
			tstest.Poll(time.Minute, func() error {
				if q := cs.committer.Queued(); n+q < total {
					return fmt.Errorf("%d of %d writes queued", n+q, total)
				}
				return nil
			})
		}
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), sizes...)
	}
}

// sharedCommits reports whether total writes took at most two commits
// (the held first one and the one after it).
func sharedCommits(b []int, total int) bool {
	sum := 0
	for _, n := range b {
		sum += n
	}
	return len(b) <= 2 && sum == total
}

// TestGroupCommitConcurrentStores stores many chunks at once, some of them
// several times: they share one synced commit, each chunk is stored and
// charged once, and all of it is on disk after a reopen.
func TestGroupCommitConcurrentStores(t *testing.T) {
	dir := t.TempDir()
	cs, db := openChunkStore(t, dir, 1<<30, 1<<20)
	user := newTestUser(t)
	const distinct, dupes, size = 40, 8, 4 << 10
	cids, data := testChunks(distinct, size)
	batches := holdFirstCommit(cs, distinct+dupes)

	type result struct {
		i     int
		isNew bool
		err   error
	}
	results := make(chan result, distinct+dupes)
	var wg sync.WaitGroup
	for i := range distinct + dupes {
		j := i % distinct // the last dupes writes repeat the first chunks
		wg.Go(func() {
			isNew, err := cs.put(t.Context(), cids[j], data[j], user.meta(size))
			results <- result{j, isNew, err}
		})
	}
	wg.Wait()
	close(results)
	newCount := make(map[int]int)
	for r := range results {
		if r.err != nil {
			t.Fatalf("chunk %d: %v", r.i, r.err)
		}
		if r.isNew {
			newCount[r.i]++
		}
	}
	for i := range distinct {
		if newCount[i] != 1 {
			t.Errorf("chunk %d reported new %d times, want once", i, newCount[i])
		}
	}
	b := batches()
	if !sharedCommits(b, distinct+dupes) {
		t.Errorf("commit batches %v: writes queued during a commit must share the next", b)
	}
	want := Usage{Bytes: distinct * size, Chunks: distinct}
	if u, err := cs.usage(user.id); err != nil || u != want {
		t.Fatalf("usage %+v (%v), want %+v", u, err, want)
	}

	// Durable: reopen the store and read everything back.
	cs.close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cs, db = openChunkStore(t, dir, 1<<30, 1<<20)
	defer db.Close()
	defer cs.close()
	for i, c := range cids {
		got, err := cs.get(c)
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Fatalf("chunk %d after reopen: %v", i, err)
		}
	}
	if u, err := cs.usage(user.id); err != nil || u != want {
		t.Fatalf("usage after reopen %+v (%v), want %+v", u, err, want)
	}
	held, err := cs.list()
	if err != nil || len(held) != distinct {
		t.Fatalf("%d chunks listed (%v), want %d", len(held), err, distinct)
	}
}

// TestGroupCommitQuotaExact races more uploads than the quota allows in
// one commit: exactly the quota is stored and charged, the rest refused,
// and another user's uploads in the same commit are not affected.
func TestGroupCommitQuotaExact(t *testing.T) {
	const quota, tries, size = 10, 40, 1 << 10
	cs, db := openChunkStore(t, t.TempDir(), 1<<30, quota)
	defer db.Close()
	defer cs.close()
	alice, bob := newTestUser(t), newTestUser(t)
	cids, data := testChunks(tries+quota, size)
	batches := holdFirstCommit(cs, tries+quota)

	var mu sync.Mutex
	stored, refused, bobStored := 0, 0, 0
	var wg sync.WaitGroup
	for i := range tries + quota {
		owner := alice
		if i >= tries {
			owner = bob // a positive control: within its quota
		}
		wg.Go(func() {
			isNew, err := cs.put(t.Context(), cids[i], data[i], owner.meta(size))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && isNew && owner == alice:
				stored++
			case err == nil && isNew:
				bobStored++
			case errors.Is(err, ErrQuotaExceeded) && owner == alice:
				refused++
			default:
				t.Errorf("chunk %d: new %v, err %v", i, isNew, err)
			}
		})
	}
	wg.Wait()
	if b := batches(); !sharedCommits(b, tries+quota) {
		t.Errorf("commit batches %v: the uploads did not race in one commit", b)
	}
	if stored != quota || refused != tries-quota || bobStored != quota {
		t.Fatalf("alice stored %d, refused %d; bob stored %d; want %d, %d, %d", stored, refused, bobStored, quota, tries-quota, quota)
	}
	for _, u := range []testUser{alice, bob} {
		if got, err := cs.usage(u.id); err != nil || got != (Usage{Bytes: quota * size, Chunks: quota}) {
			t.Fatalf("usage of %s: %+v (%v)", u.id, got, err)
		}
	}
	kept := 0
	for _, c := range cids[:tries] {
		if ok, _ := cs.has(c); ok {
			kept++
		}
	}
	if kept != quota {
		t.Fatalf("%d of alice's chunks on disk, want %d: a refused upload stored something", kept, quota)
	}
}

// TestGroupCommitSplitsLargeBatches queues more bytes of values that
// badger keeps in its tree (under its value threshold) than one
// transaction holds: the commit splits, and every chunk is stored and
// charged once.
func TestGroupCommitSplitsLargeBatches(t *testing.T) {
	const n, size = 14, 1<<20 - 1 // 14 MB: past one transaction's limit
	cs, db := openChunkStore(t, t.TempDir(), 1<<30, 1<<20)
	defer db.Close()
	defer cs.close()
	user := newTestUser(t)
	cids, data := testChunks(n, size)
	batches := holdFirstCommit(cs, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if isNew, err := cs.put(t.Context(), cids[i], data[i], user.meta(size)); err != nil || !isNew {
				t.Errorf("chunk %d: new %v, %v", i, isNew, err)
			}
		})
	}
	wg.Wait()
	if b := batches(); !sharedCommits(b, n) {
		t.Fatalf("commit batches %v: the chunks were not queued together", b)
	}
	if u, err := cs.usage(user.id); err != nil || u != (Usage{Bytes: n * size, Chunks: n}) {
		t.Fatalf("usage %+v (%v)", u, err)
	}
	for i, c := range cids {
		if got, err := cs.get(c); err != nil || !bytes.Equal(got, data[i]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
}

// TestChunkStoreRemoveAndStop removes through the committer (usage back to
// nothing, another owner's remove ignored) and refuses writes once closed.
func TestChunkStoreRemoveAndStop(t *testing.T) {
	cs, db := openChunkStore(t, t.TempDir(), 1<<30, 1<<20)
	defer db.Close()
	alice, bob := newTestUser(t), newTestUser(t)
	cids, data := testChunks(2, 100)
	ctx := context.Background()
	for i := range cids {
		if _, err := cs.put(ctx, cids[i], data[i], alice.meta(100)); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := cs.remove(ctx, cids[0], bob.id); err != nil || ok {
		t.Fatalf("bob removed alice's chunk: %v %v", ok, err)
	}
	if ok, err := cs.remove(ctx, cids[0], alice.id); err != nil || !ok {
		t.Fatalf("remove: %v %v", ok, err)
	}
	if u, _ := cs.usage(alice.id); u != (Usage{Bytes: 100, Chunks: 1}) {
		t.Fatalf("usage after one remove: %+v", u)
	}
	if ok, err := cs.remove(ctx, cids[1], ident.UserID{}); err != nil || !ok {
		t.Fatalf("remove of any owner: %v %v", ok, err)
	}
	if u, _ := cs.usage(alice.id); u != (Usage{}) {
		t.Fatalf("usage after removing everything: %+v", u)
	}
	cs.close()
	if _, err := cs.put(ctx, cids[0], data[0], alice.meta(100)); !errors.Is(err, ErrStopped) {
		t.Fatalf("put after close: %v", err)
	}
	if ok, _ := cs.has(cids[0]); ok {
		t.Fatal("a put after close stored the chunk")
	}
}
