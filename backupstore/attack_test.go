package backupstore_test

import (
	"bytes"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/wire"
)

// uploader uploads chunks and backups of u through node nd, signed by k,
// and waits until every storage node of nw that should hold them does.
type uploader struct {
	t  testing.TB
	nw *testnet.Network
	nd *node.Node
	u  user
	k  e2ee.DeviceKeys
}

func (up uploader) put(data []byte, manifest bool) cid.Cid {
	up.t.Helper()
	c := wire.ChunkCID(data)
	if _, err := up.nd.Backup().Put(up.t.Context(), c, data, manifest, auth(up.k, up.u.id, up.nd, c.String())); err != nil {
		up.t.Fatal(err)
	}
	waitHeldBy(up.t, up.nw, c, expectedHolders(up.nw, c, 3))
	return c
}

// backup uploads chunks and a manifest listing them and returns the
// manifest's CID and every CID of the backup, manifest first.
func (up uploader) backup(chunks ...[]byte) (cid.Cid, []cid.Cid) {
	up.t.Helper()
	m := wire.Manifest{User: up.u.id, Created: time.Now()}
	var all []cid.Cid
	for _, d := range chunks {
		c := up.put(d, false)
		all = append(all, c)
		m.Chunks = append(m.Chunks, wire.ManifestChunk{CID: c, Size: uint32(len(d))})
		m.Size += uint64(len(d))
	}
	mb, err := m.Encode()
	if err != nil {
		up.t.Fatal(err)
	}
	mc := up.put(mb, true)
	return mc, append([]cid.Cid{mc}, all...)
}

// waitPointerEverywhere waits until every node's DHT and every node's
// backup store serve want as the user's pointer.
func waitPointerEverywhere(t testing.TB, nw *testnet.Network, u user, want []byte) {
	t.Helper()
	key := wire.PointerKey(u.id)
	tstest.WaitFor(t, 30*time.Second, func() error {
		for i, nd := range nw.Nodes {
			got, err := nd.Host().DHT().GetValue(t.Context(), key)
			if err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("node %d: the DHT serves another pointer (%d bytes, %v)", i, len(got), err)
			}
			got, err = nd.Backup().Pointer(t.Context(), u.id)
			if err != nil || !bytes.Equal(got, want) {
				return fmt.Errorf("node %d: the backup store serves another pointer (%d bytes, %v)", i, len(got), err)
			}
		}
		return nil
	})
}

// A device revoked from the user's chain signs pointers with the chain
// from before its revocation: one dated a century ahead, and one dated
// now, naming the user's older, smaller backup. Neither replaces the real
// pointer on any node, and GC, run as if two days had passed, deletes no
// chunk of the real backup. Positive control: a new pointer of an active
// device replaces the real one everywhere.
func TestRevokedDeviceCannotReplaceOrDestroyBackup(t *testing.T) {
	nw := backupNet(t, 3, nil)
	u := register(t, nw, nw.Nodes[0])
	up := uploader{t: t, nw: nw, nd: nw.Nodes[0], u: u, k: u.phone}
	old, _ := up.backup(randomChunk(1000))
	real, realCIDs := up.backup(randomChunk(1000), randomChunk(1000))
	ch, err := nw.Nodes[0].KeyRegistry().Lookup(t.Context(), u.id)
	if err != nil {
		t.Fatal(err)
	}
	before := ch.Links // the chain in which the laptop is active
	p1 := pointer(t, nw, u, u.phone, real, time.Now())
	if _, err := nw.Nodes[0].Backup().PutPointer(t.Context(), p1); err != nil {
		t.Fatal(err)
	}
	waitPointerEverywhere(t, nw, u, p1)

	rev, err := e2ee.NewRevokeDevice(ch.Set, u.phone, u.laptop.ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Nodes[0].KeyRegistry().AppendLink(t.Context(), u.id, rev.Encode()); err != nil {
		t.Fatal(err)
	}
	waitChain(t, nw, u.id, 3)

	attacks := map[string][]byte{
		"future-dated": signPointer(t, u, u.laptop, old, time.Now().AddDate(100, 0, 0), before),
		"dated now":    signPointer(t, u, u.laptop, old, time.Now().Add(time.Second), before),
	}
	for name, p := range attacks {
		if _, err := nw.Nodes[1].Backup().PutPointer(t.Context(), p); !errors.Is(err, wire.ErrBadPointer) {
			t.Errorf("%s: PutPointer: %v, want %v", name, err, wire.ErrBadPointer)
		}
		nw.RawPut(t.Context(), wire.PointerKey(u.id), p)
	}
	// The active phone's own pointer a century ahead is refused too.
	if _, err := nw.Nodes[1].Backup().PutPointer(t.Context(), pointer(t, nw, u, u.phone, old, time.Now().AddDate(100, 0, 0))); !errors.Is(err, wire.ErrBadPointer) {
		t.Errorf("phone's future-dated pointer: %v", err)
	}
	waitPointerEverywhere(t, nw, u, p1)

	for i, nd := range nw.Nodes {
		if _, err := nd.Backup().GCAt(t.Context(), time.Now().Add(48*time.Hour)); err != nil {
			t.Fatalf("node %d: gc: %v", i, err)
		}
		for _, c := range realCIDs {
			if ok, err := nd.Backup().Has(c); err != nil || !ok {
				t.Fatalf("node %d: chunk %s of the real backup is gone after GC (%v)", i, c, err)
			}
		}
	}

	// Positive control: the phone's next backup replaces the pointer.
	next, _ := up.backup(randomChunk(1000))
	p2 := pointer(t, nw, u, u.phone, next, time.Now().Add(2*time.Second))
	if _, err := nw.Nodes[1].Backup().PutPointer(t.Context(), p2); err != nil {
		t.Fatal(err)
	}
	waitPointerEverywhere(t, nw, u, p2)
	if _, err := nw.Nodes[2].Backup().Get(t.Context(), next); err != nil {
		t.Fatalf("read the new backup's manifest: %v", err)
	}
}

// dropRecord deletes the DHT record under key from node nd's store: what
// the DHT does to a record nobody put again within p2p.RecordLifetime
// (kad-dht keeps value records under "/<namespace>/" + base32(key)).
func dropRecord(t testing.TB, nd *node.Node, key string) {
	t.Helper()
	ns, _, err := record.SplitKey(key)
	if err != nil {
		t.Fatal(err)
	}
	k := ds.NewKey("/" + ns + "/" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(key)))
	if err := nd.Store().Prefix("dht/").Datastore().Delete(t.Context(), k); err != nil {
		t.Fatal(err)
	}
}

// The node a backup was made through (not a storage node) leaves for good
// and the DHT forgets its pointer record, as it does once the record's
// lifetime passes without a put. The storage nodes holding the backup
// have learned the pointer on their republish loop (called here as the
// loop does every backup.republish_interval; the loop itself runs in
// TestStorageNodeKeepsAndRepublishesPointer): their next round puts it in
// the DHT again, every node resolves it, the backup restores through any
// node, and GC two days later keeps every chunk.
func TestBackupOutlivesItsEntryNode(t *testing.T) {
	const entry = 3
	nw := backupNet(t, 4, func(i int, c *backupstore.Config) { c.Enabled = i != entry })
	u := register(t, nw, nw.Nodes[entry])
	up := uploader{t: t, nw: nw, nd: nw.Nodes[entry], u: u, k: u.phone}
	m, cids := up.backup(randomChunk(3000), randomChunk(2000))
	p := pointer(t, nw, u, u.phone, m, time.Now())
	if _, err := nw.Nodes[entry].Backup().PutPointer(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	storage := []int{0, 1, 2}
	for _, i := range storage {
		nw.Nodes[i].Backup().Republish(t.Context())
	}

	nw.Stop(entry)
	key := wire.PointerKey(u.id)
	for _, i := range storage {
		dropRecord(t, nw.Nodes[i], key)
	}
	for _, i := range storage {
		if got, err := nw.Nodes[i].Host().DHT().GetValue(t.Context(), key); err == nil {
			t.Fatalf("node %d still finds %d bytes under %s after the records were dropped", i, len(got), key)
		}
	}

	for _, i := range storage {
		nw.Nodes[i].Backup().Republish(t.Context())
	}
	for _, i := range storage {
		nd := nw.Nodes[i]
		got, err := nd.Host().DHT().GetValue(t.Context(), key)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("node %d: the DHT serves %d bytes (%v), want the pointer", i, len(got), err)
		}
		// Restore: pointer, manifest, chunks.
		pb, err := nd.Backup().Pointer(t.Context(), u.id)
		if err != nil || !bytes.Equal(pb, p) {
			t.Fatalf("node %d: pointer: %v", i, err)
		}
		r, _ := wire.DecodePointerRecord(pb)
		mb, err := nd.Backup().Get(t.Context(), r.Pointer.Manifest)
		if err != nil {
			t.Fatalf("node %d: manifest: %v", i, err)
		}
		man, err := wire.DecodeManifest(mb)
		if err != nil {
			t.Fatal(err)
		}
		for _, mc := range man.Chunks {
			if data, err := nd.Backup().Get(t.Context(), mc.CID); err != nil || uint32(len(data)) != mc.Size {
				t.Fatalf("node %d: chunk %s: %d bytes, %v", i, mc.CID, len(data), err)
			}
		}
	}
	for _, i := range storage {
		if _, err := nw.Nodes[i].Backup().GCAt(t.Context(), time.Now().Add(p2p.RecordLifetime+time.Hour)); err != nil {
			t.Fatalf("node %d: gc: %v", i, err)
		}
		for _, c := range cids {
			if ok, err := nw.Nodes[i].Backup().Has(c); err != nil || !ok {
				t.Fatalf("node %d: chunk %s collected (%v)", i, c, err)
			}
		}
	}
}

// A replicate request carries the device's authorization as first given,
// which may be old; an old one replayed for a chunk the user's backup has
// dropped is refused. Positive controls (repair still works): the same
// old kind of authorization for a chunk the newest backup lists, and a
// recent one for a chunk no backup lists yet, are accepted.
func TestReplayedOldAuthorizationRefused(t *testing.T) {
	nw := backupNet(t, 4, nil)
	u := register(t, nw, nw.Nodes[0])
	entry := nw.Nodes[0]
	up := uploader{t: t, nw: nw, nd: entry, u: u, k: u.phone}
	x, y := randomChunk(1500), randomChunk(1500)
	m1, _ := up.backup(x)
	if _, err := entry.Backup().PutPointer(t.Context(), pointer(t, nw, u, u.phone, m1, time.Now())); err != nil {
		t.Fatal(err)
	}
	m2, _ := up.backup(y)
	if _, err := entry.Backup().PutPointer(t.Context(), pointer(t, nw, u, u.phone, m2, time.Now().Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	// nonHolder is a storage node that is not among c's holders, and
	// sender one that is not it.
	nonHolder := func(c cid.Cid) (*node.Node, *node.Node) {
		holders := expectedHolders(nw, c, 3)
		for i, nd := range nw.Nodes {
			if !slices.Contains(holders, nd.PeerID()) {
				return nd, nw.Nodes[(i+1)%len(nw.Nodes)]
			}
		}
		t.Fatalf("every node holds %s", c)
		return nil, nil
	}
	twoDaysAgo := time.Now().Add(-48 * time.Hour)
	replicate := func(data []byte, at time.Time) (*node.Node, error) {
		c := wire.ChunkCID(data)
		target, sender := nonHolder(c)
		a := wire.SignUpload(u.phone, u.id, entry.PeerID().String(), c.String(), at)
		return target, sender.Backup().ReplicateTo(t.Context(), target.PeerID(), c, data, false, a, entry.PeerID())
	}

	target, err := replicate(x, twoDaysAgo)
	if !errors.Is(err, backupstore.ErrUnauthenticated) {
		t.Fatalf("replayed authorization of a dropped chunk: %v, want %v", err, backupstore.ErrUnauthenticated)
	}
	if ok, _ := target.Backup().Has(wire.ChunkCID(x)); ok {
		t.Fatal("the refused chunk was stored")
	}
	if target, err = replicate(y, twoDaysAgo); err != nil {
		t.Fatalf("old authorization of a chunk the newest backup lists: %v", err)
	}
	if ok, _ := target.Backup().Has(wire.ChunkCID(y)); !ok {
		t.Fatal("the accepted chunk is not held")
	}
	if _, err := replicate(randomChunk(800), time.Now().Add(-time.Hour)); err != nil {
		t.Fatalf("recent authorization of a new chunk: %v", err)
	}
}
