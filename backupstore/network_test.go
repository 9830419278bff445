package backupstore_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// backupNet starts n storage nodes with 3 replicas and a write quorum of
// 2; the repair and GC loops are left to the tests.
func backupNet(t testing.TB, n int, edit func(i int, c *backupstore.Config)) *testnet.Network {
	t.Helper()
	nw := testnet.New(t, n, testnet.Configure(func(i int, cfg *node.Config) {
		cfg.Backup.Replicas, cfg.Backup.WriteQuorum = 3, 2
		cfg.Backup.RepairInterval = config.Duration(24 * time.Hour)
		cfg.Backup.GCInterval = config.Duration(24 * time.Hour)
		if edit != nil {
			edit(i, &cfg.Backup)
		}
	}))
	// Wait until identify has told every node which peers store backups.
	// A node whose routing table lost a peer (a query that timed out on a
	// busy machine drops it) refreshes the table to find it again.
	probe := wire.ChunkCID([]byte("probe"))
	for i, nd := range nw.Nodes {
		refresh := time.Now().Add(2 * time.Second)
		tstest.WaitFor(t, 30*time.Second, func() error {
			peers, err := nd.Backup().Holders(t.Context(), probe)
			if err == nil && len(peers) == min(3, storageCount(nw)) {
				return nil
			}
			if time.Now().After(refresh) {
				nd.Host().RefreshRoutingTable(t.Context())
				refresh = time.Now().Add(2 * time.Second)
			}
			return fmt.Errorf("node %d sees holders %v (%v)", i, peers, err)
		})
	}
	return nw
}

func storageCount(nw *testnet.Network) int {
	n := 0
	for _, c := range nw.Configs {
		if c.Backup.Enabled {
			n++
		}
	}
	return n
}

// user is a registered user with a phone and a laptop.
type user struct {
	id            ident.UserID
	phone, laptop e2ee.DeviceKeys
}

func keys(t testing.TB) e2ee.DeviceKeys {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// register registers a phone on nd and links a laptop, then waits until
// every node finds the chain with both devices.
func register(t testing.TB, nw *testnet.Network, nd *node.Node) user {
	t.Helper()
	u := user{phone: keys(t), laptop: keys(t)}
	reg := nd.KeyRegistry()
	nonce, _, err := reg.Nonce("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := e2ee.NewGenesis(u.phone, time.Now())
	c, err := reg.Register(t.Context(), g.Encode(), e2ee.SignRegistration(u.phone, nonce).Encode(), "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := e2ee.NewAddDeviceRequest(c.Set.Head(), u.laptop)
	add, err := e2ee.NewAddDevice(c.Set, u.phone, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AppendLink(t.Context(), c.Set.User(), add.Encode()); err != nil {
		t.Fatal(err)
	}
	u.id = c.Set.User()
	waitChain(t, nw, u.id, 2)
	return u
}

// waitChain waits until every running node's registry holds version v of
// user's chain.
func waitChain(t testing.TB, nw *testnet.Network, id ident.UserID, v uint64) {
	t.Helper()
	for i, nd := range nw.Nodes {
		tstest.WaitFor(t, 30*time.Second, func() error {
			c, err := nd.KeyRegistry().Lookup(t.Context(), id)
			if err == nil && c.Version() >= v {
				return nil
			}
			if err != nil {
				return fmt.Errorf("node %d: chain of %s: %w", i, id, err)
			}
			return fmt.Errorf("node %d: chain of %s at version %d, want %d", i, id, c.Version(), v)
		})
	}
}

func auth(k e2ee.DeviceKeys, u ident.UserID, nd *node.Node, what string) wire.UploadAuth {
	return wire.SignUpload(k, u, nd.PeerID().String(), what, time.Now())
}

func randomChunk(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// expectedHolders ranks the storage nodes by XOR distance to c's
// placement key, independently of the service, and returns the r closest.
func expectedHolders(nw *testnet.Network, c cid.Cid, r int, skip ...int) []peer.ID {
	var ids []peer.ID
	for i, nd := range nw.Nodes {
		if nw.Configs[i].Backup.Enabled && !slices.Contains(skip, i) {
			ids = append(ids, nd.PeerID())
		}
	}
	sorted := kb.SortClosestPeers(ids, kb.ConvertKey(string(backupstore.PlacementKey(c))))
	return sorted[:min(r, len(sorted))]
}

// waitHeldBy waits until exactly the nodes want (by peer ID) hold c among
// the nodes not skipped.
func waitHeldBy(t testing.TB, nw *testnet.Network, c cid.Cid, want []peer.ID, skip ...int) {
	t.Helper()
	tstest.WaitFor(t, 30*time.Second, func() error {
		var got []peer.ID
		for i, nd := range nw.Nodes {
			if slices.Contains(skip, i) {
				continue
			}
			if ok, err := nd.Backup().Has(c); err == nil && ok {
				got = append(got, nd.PeerID())
			}
		}
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		if slices.Equal(got, w) {
			return nil
		}
		return fmt.Errorf("chunk %s held by %v, want %v\n%s", c, got, w, nw)
	})
}

func indexOf(nw *testnet.Network, p peer.ID) int {
	for i, nd := range nw.Nodes {
		if nd.PeerID() == p {
			return i
		}
	}
	return -1
}

func TestPlacementReadsTamperAndRepair(t *testing.T) {
	nw := backupNet(t, 5, nil)
	u := register(t, nw, nw.Nodes[0])
	data := randomChunk(64 << 10)
	c := wire.ChunkCID(data)
	n, err := nw.Nodes[0].Backup().Put(t.Context(), c, data, false, auth(u.laptop, u.id, nw.Nodes[0], c.String()))
	if err != nil || n < 2 {
		t.Fatalf("put: %d copies, %v", n, err)
	}
	holders := expectedHolders(nw, c, 3)
	waitHeldBy(t, nw, c, holders)
	for i, nd := range nw.Nodes {
		got, err := nd.Backup().Get(t.Context(), c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("node %d reads %d bytes, %v", i, len(got), err)
		}
	}
	// Usage is charged once per holder, and a second upload charges nothing.
	for _, p := range holders {
		if us, _ := nw.Nodes[indexOf(nw, p)].Backup().Usage(u.id); us.Chunks != 1 || us.Bytes != uint64(len(data)) {
			t.Fatalf("holder %s: usage %+v", p, us)
		}
	}
	if _, err := nw.Nodes[1].Backup().Put(t.Context(), c, data, false, auth(u.phone, u.id, nw.Nodes[1], c.String())); err != nil {
		t.Fatal(err)
	}
	for _, p := range holders {
		if us, _ := nw.Nodes[indexOf(nw, p)].Backup().Usage(u.id); us.Chunks != 1 {
			t.Fatalf("holder %s charged twice: %+v", p, us)
		}
	}

	// A holder's copy is damaged on disk: it is never served, the other
	// replicas are.
	bad := indexOf(nw, holders[0])
	key := append([]byte("backup/c/"), c.Bytes()...)
	tampered := bytes.Clone(data)
	tampered[100] ^= 0xff
	if err := nw.Nodes[bad].Store().Prefix("").Put(key, tampered); err != nil {
		t.Fatal(err)
	}
	got, err := nw.Nodes[bad].Backup().Get(t.Context(), c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("tampered holder serves %d bytes (%v); want the good copy from another replica", len(got), err)
	}
	// The damaged copy is gone: the key is empty, or holds the good bytes
	// again (the second upload above answered at its write quorum, and its
	// write to this holder may land after the drop).
	if v, err := nw.Nodes[bad].Store().Prefix("").Get(key); err == nil && !bytes.Equal(v, data) {
		t.Fatal("the tampered copy is still held")
	}
	// Repair by the holders puts it back.
	for _, p := range holders[1:] {
		if _, err := nw.Nodes[indexOf(nw, p)].Backup().Repair(t.Context()); err != nil {
			t.Logf("repair: %v", err)
		}
	}
	waitHeldBy(t, nw, c, holders)

	// A holder crashes: repair puts the chunk on the next closest node.
	dead := indexOf(nw, holders[1])
	nw.HardStop(dead)
	want := expectedHolders(nw, c, 3, dead)
	tstest.WaitFor(t, 45*time.Second, func() error {
		for i, nd := range nw.Nodes {
			if i != dead {
				nd.Backup().Repair(t.Context())
			}
		}
		held := 0
		for _, p := range want {
			if ok, _ := nw.Nodes[indexOf(nw, p)].Backup().Has(c); ok {
				held++
			}
		}
		if held == len(want) {
			return nil
		}
		return fmt.Errorf("after the crash of node %d, %d of %v hold %s", dead, held, want, c)
	})
	if got, err := nw.Nodes[(dead+1)%5].Backup().Get(t.Context(), c); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %v", err)
	}
}

func TestQuotaRefusalStoresNothing(t *testing.T) {
	const quota = 256 << 10
	nw := backupNet(t, 3, func(_ int, c *backupstore.Config) { c.QuotaBytes, c.QuotaChunks = quota, 3 })
	u := register(t, nw, nw.Nodes[0])
	entry := nw.Nodes[0].Backup()
	// Positive control: a chunk within the quota is stored everywhere.
	small := randomChunk(200 << 10)
	cs := wire.ChunkCID(small)
	if _, err := entry.Put(t.Context(), cs, small, false, auth(u.phone, u.id, nw.Nodes[0], cs.String())); err != nil {
		t.Fatal(err)
	}
	waitHeldBy(t, nw, cs, expectedHolders(nw, cs, 3))
	before := make([]backupstore.Usage, 3)
	for i, nd := range nw.Nodes {
		before[i], _ = nd.Backup().Usage(u.id)
	}
	big := randomChunk(100 << 10)
	cb := wire.ChunkCID(big)
	_, err := entry.Put(t.Context(), cb, big, false, auth(u.phone, u.id, nw.Nodes[0], cb.String()))
	if !errors.Is(err, backupstore.ErrQuotaExceeded) {
		t.Fatalf("over-quota put: %v", err)
	}
	for i, nd := range nw.Nodes {
		after, _ := nd.Backup().Usage(u.id)
		if ok, _ := nd.Backup().Has(cb); ok || after != before[i] {
			t.Errorf("node %d: holds the refused chunk %v, usage %+v → %+v", i, ok, before[i], after)
		}
	}
	// The preflight says so before anything is sent.
	what := wire.CheckWhat(100<<10, 1)
	q, err := entry.Check(t.Context(), auth(u.phone, u.id, nw.Nodes[0], what), 100<<10, 1)
	if !errors.Is(err, backupstore.ErrQuotaExceeded) || q.Bytes != 200<<10 {
		t.Fatalf("check: %+v, %v", q, err)
	}
	what = wire.CheckWhat(50<<10, 1)
	if _, err := entry.Check(t.Context(), auth(u.phone, u.id, nw.Nodes[0], what), 50<<10, 1); err != nil {
		t.Fatalf("check within quota: %v", err)
	}
}

func TestForgedUploadsRefused(t *testing.T) {
	nw := backupNet(t, 3, nil)
	u := register(t, nw, nw.Nodes[0])
	other := register(t, nw, nw.Nodes[1])
	entry := nw.Nodes[0]
	data := randomChunk(4096)
	c := wire.ChunkCID(data)
	what := c.String()
	stale := wire.SignUpload(u.phone, u.id, entry.PeerID().String(), what, time.Now().Add(-wire.BackupTimeSkew-time.Minute))
	forged := map[string]wire.UploadAuth{
		"stranger's device":   auth(keys(t), u.id, entry, what),
		"other user's device": auth(other.phone, u.id, entry, what),
		"other user's claim":  auth(u.phone, other.id, entry, what),
		"stale time":          stale,
		"wrong node":          auth(u.phone, u.id, nw.Nodes[1], what),
		"other chunk":         auth(u.phone, u.id, entry, wire.ChunkCID([]byte("x")).String()),
	}
	for name, a := range forged {
		if _, err := entry.Backup().Put(t.Context(), c, data, false, a); !errors.Is(err, backupstore.ErrUnauthenticated) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The laptop is revoked: its uploads are refused from then on.
	reg := nw.Nodes[0].KeyRegistry()
	ch, err := reg.Lookup(t.Context(), u.id)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e2ee.NewRevokeDevice(ch.Set, u.phone, u.laptop.ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AppendLink(t.Context(), u.id, rev.Encode()); err != nil {
		t.Fatal(err)
	}
	waitChain(t, nw, u.id, 3)
	if _, err := entry.Backup().Put(t.Context(), c, data, false, auth(u.laptop, u.id, entry, what)); !errors.Is(err, backupstore.ErrUnauthenticated) {
		t.Errorf("revoked device: %v", err)
	}
	for i, nd := range nw.Nodes {
		if ok, _ := nd.Backup().Has(c); ok {
			t.Fatalf("node %d stored a chunk of a refused upload", i)
		}
	}
	// A manifest of another user is refused too.
	m := wire.Manifest{User: other.id, Created: time.Now(), Size: uint64(len(data)), Chunks: []wire.ManifestChunk{{CID: c, Size: uint32(len(data))}}}
	mb, _ := m.Encode()
	mc := wire.ChunkCID(mb)
	if _, err := entry.Backup().Put(t.Context(), mc, mb, true, auth(u.phone, u.id, entry, mc.String())); !errors.Is(err, wire.ErrBadChunk) {
		t.Errorf("manifest of another user: %v", err)
	}
	// Positive control: the phone, fresh and for this node, is accepted.
	if _, err := entry.Backup().Put(t.Context(), c, data, false, auth(u.phone, u.id, entry, what)); err != nil {
		t.Fatalf("phone: %v", err)
	}
}

// pointer signs a pointer of u to manifest m at time at, carrying the
// chain node 0 holds.
func pointer(t testing.TB, nw *testnet.Network, u user, k e2ee.DeviceKeys, m cid.Cid, at time.Time) []byte {
	t.Helper()
	ch, err := nw.Nodes[0].KeyRegistry().Lookup(t.Context(), u.id)
	if err != nil {
		t.Fatal(err)
	}
	return signPointer(t, u, k, m, at, ch.Links)
}

// signPointer signs a pointer of u to manifest m at time at, carrying
// chain (encoded links, genesis first).
func signPointer(t testing.TB, u user, k e2ee.DeviceKeys, m cid.Cid, at time.Time, chain [][]byte) []byte {
	t.Helper()
	r, err := wire.SignBackupPointer(wire.BackupPointer{User: u.id, Device: k.ID(), Manifest: m, Size: 100, Time: at}, k.Signing, chain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPointers(t *testing.T) {
	nw := backupNet(t, 3, nil)
	u := register(t, nw, nw.Nodes[0])
	other := register(t, nw, nw.Nodes[0])
	now := time.Now()
	m1, m2 := wire.ChunkCID([]byte("m1")), wire.ChunkCID([]byte("m2"))
	p1 := pointer(t, nw, u, u.phone, m1, now)
	if _, err := nw.Nodes[0].Backup().PutPointer(t.Context(), p1); err != nil {
		t.Fatal(err)
	}
	// Every node finds it (node 0 from its store, the others from the DHT).
	for i, nd := range nw.Nodes {
		got, err := nd.Backup().Pointer(t.Context(), u.id)
		if err != nil || !bytes.Equal(got, p1) {
			t.Fatalf("node %d: pointer %v", i, err)
		}
	}
	// Older pointers are refused by the store.
	older := pointer(t, nw, u, u.laptop, m2, now.Add(-time.Minute))
	if _, err := nw.Nodes[0].Backup().PutPointer(t.Context(), older); !errors.Is(err, backupstore.ErrStalePointer) {
		t.Fatalf("older pointer: %v", err)
	}

	key := wire.PointerKey(u.id)
	// Raw DHT puts that skip the sender's checks: unsigned, foreign and
	// older records are refused by every node's validator.
	unsigned, _ := wire.DecodePointerRecord(pointer(t, nw, u, u.phone, m2, now.Add(time.Minute)))
	unsigned.Signature = make([]byte, ident.SignatureSize)
	ub, _ := unsigned.Encode()
	foreign := pointer(t, nw, other, other.phone, m2, now.Add(2*time.Minute))
	for name, v := range map[string][]byte{"unsigned": ub, "foreign": foreign, "older": older} {
		nw.RawPut(t.Context(), key, v)
		for i, nd := range nw.Nodes {
			got, err := nd.Host().DHT().GetValue(t.Context(), key)
			if err != nil || !bytes.Equal(got, p1) {
				t.Fatalf("%s raw put: node %d serves %d bytes (%v), want the first pointer", name, i, len(got), err)
			}
		}
	}
	// Positive control: a newer pointer put raw replaces it everywhere.
	newer := pointer(t, nw, u, u.laptop, m2, now.Add(3*time.Minute))
	nw.RawPut(t.Context(), key, newer)
	for i, nd := range nw.Nodes {
		got, err := nd.Host().DHT().GetValue(t.Context(), key)
		if err != nil || !bytes.Equal(got, newer) {
			t.Fatalf("newer raw put: node %d: %v", i, err)
		}
	}
	// Node 0 prefers the newer DHT pointer over its stored one.
	if got, err := nw.Nodes[0].Backup().Pointer(t.Context(), u.id); err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("node 0 pointer after a newer put: %v", err)
	}
	if _, err := nw.Nodes[1].Backup().Pointer(t.Context(), ident.UserID{}); !errors.Is(err, backupstore.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestGarbageCollection(t *testing.T) {
	// One storage node; GC is run as if hours had passed (GCAt), the
	// network parts for real.
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Backup.Replicas, cfg.Backup.WriteQuorum = 1, 1
		cfg.Backup.GCInterval = config.Duration(24 * time.Hour)
		cfg.Backup.GCGrace = config.Duration(time.Hour)
	}))
	nd := nw.Nodes[0]
	bs := nd.Backup()
	u := register(t, nw, nd)
	put := func(d []byte, manifest bool) cid.Cid {
		c := wire.ChunkCID(d)
		if _, err := bs.Put(t.Context(), c, d, manifest, auth(u.phone, u.id, nd, c.String())); err != nil {
			t.Fatal(err)
		}
		return c
	}
	backup := func(chunks ...[]byte) cid.Cid {
		m := wire.Manifest{User: u.id, Created: time.Now()}
		for _, d := range chunks {
			m.Chunks = append(m.Chunks, wire.ManifestChunk{CID: put(d, false), Size: uint32(len(d))})
			m.Size += uint64(len(d))
		}
		mb, _ := m.Encode()
		return put(mb, true)
	}
	a, b, c, d := randomChunk(1000), randomChunk(1000), randomChunk(1000), randomChunk(1000)
	m1 := backup(a, b, c)
	orphan := put(randomChunk(500), false)
	if _, err := bs.PutPointer(t.Context(), pointer(t, nw, u, u.phone, m1, time.Now().Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if n, err := bs.GCAt(t.Context(), time.Now()); n != 0 || err != nil {
		t.Fatalf("gc within the grace period: %d deleted, %v", n, err)
	}
	if n, err := bs.GCAt(t.Context(), time.Now().Add(2*time.Hour)); n != 1 || err != nil {
		t.Fatalf("gc with backup 1 current: %d deleted (want the orphan), %v", n, err)
	}
	// Backup 2 keeps chunk a and replaces b and c.
	m2 := backup(a, d)
	if _, err := bs.PutPointer(t.Context(), pointer(t, nw, u, u.phone, m2, time.Now().Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	before, _ := bs.Usage(u.id)
	if n, err := bs.GCAt(t.Context(), time.Now().Add(2*time.Hour)); n != 3 || err != nil {
		t.Fatalf("gc after backup 2: %d deleted (want m1, b, c), %v", n, err)
	}
	for _, k := range []struct {
		c    cid.Cid
		keep bool
	}{{m1, false}, {wire.ChunkCID(b), false}, {wire.ChunkCID(c), false}, {orphan, false},
		{m2, true}, {wire.ChunkCID(a), true}, {wire.ChunkCID(d), true}} {
		if ok, _ := bs.Has(k.c); ok != k.keep {
			t.Errorf("chunk %s held: %v, want %v", k.c, ok, k.keep)
		}
	}
	after, _ := bs.Usage(u.id)
	if after.Chunks != before.Chunks-3 || after.Bytes >= before.Bytes {
		t.Errorf("usage %+v → %+v", before, after)
	}
}

// GC deletes only on positive evidence: with no pointer, with a pointer
// whose manifest cannot be read, and for a chunk uploaded after the
// newest pointer (a backup still being made), it deletes nothing, however
// old the chunks. Positive control: a newer pointer whose manifest leaves
// chunks out lets GC delete exactly those.
func TestGCDeletesOnlyOnPositiveEvidence(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Backup.Replicas, cfg.Backup.WriteQuorum = 1, 1
		cfg.Backup.GCInterval = config.Duration(24 * time.Hour)
		cfg.Backup.GCGrace = config.Duration(time.Hour)
	}))
	nd := nw.Nodes[0]
	bs := nd.Backup()
	u := register(t, nw, nd)
	put := func(d []byte, manifest bool, at time.Time) cid.Cid {
		c := wire.ChunkCID(d)
		if _, err := bs.Put(t.Context(), c, d, manifest, wire.SignUpload(u.phone, u.id, nd.PeerID().String(), c.String(), at)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	backup := func(at time.Time, chunks ...[]byte) cid.Cid {
		m := wire.Manifest{User: u.id, Created: at}
		for _, d := range chunks {
			m.Chunks = append(m.Chunks, wire.ManifestChunk{CID: put(d, false, at), Size: uint32(len(d))})
			m.Size += uint64(len(d))
		}
		mb, _ := m.Encode()
		return put(mb, true, at)
	}
	later := time.Now().Add(48 * time.Hour)
	gc := func(want int, why string) {
		t.Helper()
		if n, err := bs.GCAt(t.Context(), later); n != want || err != nil {
			t.Fatalf("gc %s: %d deleted, want %d (%v)", why, n, want, err)
		}
	}
	start := time.Now()
	a, b := randomChunk(1000), randomChunk(1000)
	m1 := backup(start, a, b)
	gc(0, "with no pointer")

	missing := wire.ChunkCID([]byte("a manifest no node has"))
	if _, err := bs.PutPointer(t.Context(), pointer(t, nw, u, u.phone, missing, start.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	gc(0, "with a pointer to a manifest that cannot be read")

	if _, err := bs.PutPointer(t.Context(), pointer(t, nw, u, u.phone, m1, start.Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	inProgress := put(randomChunk(700), false, start.Add(3*time.Second))
	gc(0, "of a chunk uploaded after the newest pointer")

	m2 := backup(start.Add(4*time.Second), a)
	if _, err := bs.PutPointer(t.Context(), pointer(t, nw, u, u.phone, m2, start.Add(5*time.Second))); err != nil {
		t.Fatal(err)
	}
	gc(3, "after a newer backup")
	for _, k := range []struct {
		c    cid.Cid
		keep bool
	}{{m1, false}, {wire.ChunkCID(b), false}, {inProgress, false}, {m2, true}, {wire.ChunkCID(a), true}} {
		if ok, _ := bs.Has(k.c); ok != k.keep {
			t.Errorf("chunk %s held: %v, want %v", k.c, ok, k.keep)
		}
	}
}
