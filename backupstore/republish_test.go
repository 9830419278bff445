package backupstore

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// memDHT is the DHT as one node sees it, in memory: a record put is kept
// for p2p.RecordLifetime after its last put, by the clock of the test (a
// synctest bubble's), as the DHT keeps records.
type memDHT struct {
	mu   sync.Mutex
	recs map[string]memRecord
}

type memRecord struct {
	value []byte
	put   time.Time
}

func newMemDHT() *memDHT { return &memDHT{recs: make(map[string]memRecord)} }

func (d *memDHT) FindProvidersAsync(context.Context, cid.Cid, int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo)
	close(ch)
	return ch
}

func (d *memDHT) Provide(context.Context, cid.Cid, bool) error { return nil }

func (d *memDHT) PutValue(_ context.Context, key string, value []byte, _ ...routing.Option) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recs[key] = memRecord{value: value, put: time.Now()}
	return nil
}

func (d *memDHT) GetValue(_ context.Context, key string, _ ...routing.Option) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.recs[key]
	if !ok || time.Since(r.put) > p2p.RecordLifetime {
		return nil, routing.ErrNotFound
	}
	return r.value, nil
}

// fixedUsers knows one chain.
type fixedUsers struct {
	set ident.DeviceSet
	err error // of Devices, when set
}

func (u fixedUsers) Devices(context.Context, ident.UserID) (ident.DeviceSet, error) {
	return u.set, u.err
}

func (u fixedUsers) StoredDevices(context.Context, ident.UserID) (ident.DeviceSet, bool) {
	return u.set, u.err == nil
}

// testDevice is a user of one device, its keys and its chain.
type testDevice struct {
	keys  e2ee.DeviceKeys
	set   ident.DeviceSet
	chain [][]byte
}

func newTestDevice(t testing.TB) testDevice {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chain := [][]byte{g.Encode()}
	set, _, err := ident.DecodeChain(g.UserID(), chain)
	if err != nil {
		t.Fatal(err)
	}
	return testDevice{keys: k, set: set, chain: chain}
}

func (d testDevice) user() ident.UserID { return d.set.User() }

// pointer signs a pointer to manifest m dated at.
func (d testDevice) pointer(t testing.TB, m cid.Cid, at time.Time) []byte {
	t.Helper()
	r, err := wire.SignBackupPointer(wire.BackupPointer{User: d.user(), Device: d.keys.ID(), Manifest: m, Size: 1, Time: at}, d.keys.Signing, d.chain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oneNodeService is a storage node alone (its own storage), over a fresh
// store in dir, with dht and users; it is started, and stop stops it and
// closes the store. In a synctest bubble, the store is the bubble's too.
func oneNodeService(t testing.TB, dir string, dht DHT, users UserLookup) (s *Service, stop func()) {
	t.Helper()
	db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Replicas, cfg.WriteQuorum = 1, 1
	s, err = New(cfg, &fakeHost{vals: p2p.NewValidators()}, dht, db.Prefix("backup/"), users)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, func() {
		s.Stop()
		db.Close()
	}
}

// upload stores a backup of chunks on s, authorized by d now, and
// returns its manifest's CID and every CID of it, manifest first.
func upload(t testing.TB, s *Service, d testDevice, chunks ...[]byte) (cid.Cid, []cid.Cid) {
	t.Helper()
	put := func(data []byte, manifest bool) cid.Cid {
		c := wire.ChunkCID(data)
		a := wire.SignUpload(d.keys, d.user(), s.PeerID().String(), c.String(), time.Now())
		if _, err := s.Put(t.Context(), c, data, manifest, a); err != nil {
			t.Fatal(err)
		}
		return c
	}
	m := wire.Manifest{User: d.user(), Created: time.Now()}
	var all []cid.Cid
	for _, data := range chunks {
		c := put(data, false)
		all = append(all, c)
		m.Chunks = append(m.Chunks, wire.ManifestChunk{CID: c, Size: uint32(len(data))})
		m.Size += uint64(len(data))
	}
	mb, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	mc := put(mb, true)
	return mc, append([]cid.Cid{mc}, all...)
}

// The node a pointer was put through is gone for good: only the DHT has
// the pointer, for p2p.RecordLifetime. The storage node holding the
// backup learns the pointer on its republish loop and puts it in the DHT
// every backup.republish_interval, so past the record's lifetime the
// pointer still resolves and the GC loop, running all along, has kept
// every chunk. Positive control: a later pointer (put by another gone
// entry node) that drops a chunk lets the GC loop delete that chunk.
// (The bubble's clock moves no further than that: the store's own timers
// run in the bubble too.)
func TestStorageNodeKeepsAndRepublishesPointer(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		dht := newMemDHT()
		d := newTestDevice(t)
		s, stop := oneNodeService(t, dir, dht, fixedUsers{set: d.set})
		defer stop()
		a, b := []byte("chunk a of the first backup"), []byte("chunk b of the first backup")
		m1, cids := upload(t, s, d, a, b)
		time.Sleep(time.Second)
		p1 := d.pointer(t, m1, time.Now())
		// The entry node's put, the last thing it does.
		dht.PutValue(t.Context(), wire.PointerKey(d.user()), p1)

		time.Sleep(p2p.RecordLifetime + s.cfg.RepublishInterval.Std() + time.Hour)
		synctest.Wait()
		got, err := dht.GetValue(t.Context(), wire.PointerKey(d.user()))
		if err != nil || string(got) != string(p1) {
			t.Fatalf("past the record lifetime the DHT has %d bytes (%v), want the pointer", len(got), err)
		}
		for _, c := range cids {
			if ok, err := s.Has(c); err != nil || !ok {
				t.Fatalf("chunk %s collected though the backup is current (%v)", c, err)
			}
		}

		// The second backup keeps a, drops b.
		m2, cids2 := upload(t, s, d, a, []byte("chunk c of the second backup"))
		time.Sleep(time.Second)
		dht.PutValue(t.Context(), wire.PointerKey(d.user()), d.pointer(t, m2, time.Now()))
		time.Sleep(s.cfg.GCInterval.Std() + time.Minute)
		synctest.Wait()
		for _, c := range cids2 {
			if ok, _ := s.Has(c); !ok {
				t.Errorf("chunk %s of the current backup collected", c)
			}
		}
		for _, c := range []cid.Cid{m1, wire.ChunkCID(b)} {
			if ok, _ := s.Has(c); ok {
				t.Errorf("chunk %s, dropped by the newer backup, is still held", c)
			}
		}
	})
}

// PutPointer stores nothing and says the chain is unavailable when the
// registry lookup fails; with the lookup working, the same pointer is
// stored.
func TestPutPointerRefusedWhenLookupFails(t *testing.T) {
	d := newTestDevice(t)
	p := d.pointer(t, wire.ChunkCID([]byte("manifest")), time.Now())
	lookupErr := errors.New("registry: DHT lookup timed out")
	s, stop := oneNodeService(t, t.TempDir(), newMemDHT(), fixedUsers{set: d.set, err: lookupErr})
	defer stop()
	if _, err := s.PutPointer(t.Context(), p); !errors.Is(err, ErrChainUnavailable) || !errors.Is(err, lookupErr) {
		t.Fatalf("PutPointer with a failing lookup: %v, want %v", err, ErrChainUnavailable)
	}
	if _, _, err := s.cs.pointer(d.user()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a pointer was stored: %v", err)
	}
	s.users = fixedUsers{set: d.set}
	if _, err := s.PutPointer(t.Context(), p); err != nil {
		t.Fatalf("PutPointer with the lookup working: %v", err)
	}
	if _, b, err := s.cs.pointer(d.user()); err != nil || string(b) != string(p) {
		t.Fatalf("stored pointer: %v", err)
	}
}
