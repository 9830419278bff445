package backupstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Keys under the service's prefix of the node's store.
const (
	keyChunk   = "c/" // + CID bytes → the chunk
	keyMeta    = "m/" // + CID bytes → chunkMeta
	keyUsage   = "u/" // + user ID bytes → usage
	keyPointer = "p/" // + user ID bytes → the newest PointerRecord
)

// maxTxnRetries bounds the retries of a write that conflicted with another.
const maxTxnRetries = 16

// chunkMeta is what the node keeps beside each chunk: who it is charged
// to, its size, when it was stored, its kind and the device's upload
// authorization (which repair forwards so that the new holder can check
// that the user asked for the chunk).
type chunkMeta struct {
	Owner  ident.UserID   `cbor:"1,keyasint"`
	Size   uint64         `cbor:"2,keyasint"`
	Stored int64          `cbor:"3,keyasint"` // unix milliseconds
	Kind   uint8          `cbor:"4,keyasint"`
	Device ident.DeviceID `cbor:"5,keyasint"`
	Time   int64          `cbor:"6,keyasint"` // the authorization's unix seconds
	Sig    []byte         `cbor:"7,keyasint"`
	Entry  string         `cbor:"8,keyasint"`
}

func (m chunkMeta) auth() authorization {
	return authorization{
		UploadAuth: wire.UploadAuth{User: m.Owner, Device: m.Device, Time: time.Unix(m.Time, 0).UTC(), Signature: m.Sig},
		Entry:      m.Entry,
	}
}

// Usage is what one user holds on this node against the quotas.
type Usage struct {
	Bytes  uint64 `cbor:"1,keyasint" json:"used_bytes"`
	Chunks uint64 `cbor:"2,keyasint" json:"used_chunks"`
}

// Limits of the chunk store's group commit.
const (
	// maxCommitOps bounds the writes one group commit takes.
	maxCommitOps = 256
	// maxCommitBytes bounds the chunk bytes one group commit takes.
	maxCommitBytes = 64 << 20
	// maxQueuedOps bounds the writes waiting for the committer.
	maxQueuedOps = 256
)

// chunkStore is the node's chunks, their metadata and the per-user usage.
//
// Every write of them (stores and removals) goes through one committer
// goroutine (from start to close), in order, so the quota check and the usage of each write see
// every write before it and never conflict. Writes that arrive while a
// commit is being synced share the next one: a synced write of many chunks
// costs one fsync, not one per chunk. A write returns once its
// transaction is committed (durably, with the store's sync writes).
type chunkStore struct {
	db          *store.Prefixed
	quotaBytes  uint64
	quotaChunks uint64

	committer *service.Committer[*chunkOp]
	// batched, when set, is told the number of writes of each commit.
	batched func(n int)
}

// chunkOp is one write waiting for the committer.
type chunkOp struct {
	remove bool
	c      cid.Cid
	// store
	data []byte
	meta chunkMeta
	// remove: only a chunk charged to owner, unless owner is zero
	owner ident.UserID
	// results: changed is isNew for a store, removed for a remove
	changed bool
	err     error
}

func newChunkStore(db *store.Prefixed, quotaBytes, quotaChunks uint64) *chunkStore {
	cs := &chunkStore{db: db, quotaBytes: quotaBytes, quotaChunks: quotaChunks}
	cs.committer = service.NewCommitter(service.CommitterConfig[*chunkOp]{
		Commit:    cs.commitBatch,
		Queue:     maxQueuedOps,
		MaxOps:    maxCommitOps,
		Weight:    func(o *chunkOp) int { return len(o.data) },
		MaxWeight: maxCommitBytes,
		Closed:    ErrStopped,
	})
	return cs
}

// start starts the committer; writes before it fail.
func (cs *chunkStore) start() { cs.committer.Start() }

// close stops the committer after the commit in progress; writes after
// it fail with ErrStopped. It may be called more than once.
func (cs *chunkStore) close() { cs.committer.Close() }

func ckey(prefix string, b []byte) []byte { return append([]byte(prefix), b...) }

// submit hands o to the committer and waits until it is committed,
// returning its own result. ctx bounds the wait for room in the queue
// only: a write being committed is not abandoned half-way.
func (cs *chunkStore) submit(ctx context.Context, o *chunkOp) error {
	if err := cs.committer.Submit(ctx, o); err != nil {
		if errors.Is(err, service.ErrNotStarted) {
			return fmt.Errorf("backupstore: chunk store: %w", err)
		}
		return err
	}
	return o.err
}

// commitBatch commits a batch in the committer, in as few transactions as
// fit; each write gets its own result.
func (cs *chunkStore) commitBatch(batch []*chunkOp) error {
	if cs.batched != nil {
		cs.batched(len(batch))
	}
	for rest := batch; len(rest) > 0; {
		n, err := cs.commitTxn(rest)
		if err != nil {
			for _, o := range rest[:n] {
				o.changed, o.err = false, fmt.Errorf("backupstore: commit: %w", err)
			}
		}
		rest = rest[n:]
	}
	return nil
}

// commitTxn applies the first writes of ops in one transaction and commits
// it, returning how many it took (at least one). When a write does not fit
// the transaction, the writes before it are committed alone; a write too
// big for any transaction fails by itself. err is the failure of the
// transaction, shared by the n writes it took.
func (cs *chunkStore) commitTxn(ops []*chunkOp) (n int, err error) {
	for range maxTxnRetries {
		n, err = cs.tryTxn(ops)
		if !errors.Is(err, badger.ErrConflict) {
			return n, err
		}
	}
	return n, err
}

func (cs *chunkStore) tryTxn(ops []*chunkOp) (int, error) {
	txn := cs.db.NewTransaction(true)
	defer txn.Discard()
	for i, o := range ops {
		err := cs.apply(txn, o)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrTxnTooBig) && i > 0:
			txn.Discard()
			return cs.tryTxn(ops[:i])
		case errors.Is(err, badger.ErrTxnTooBig):
			o.changed, o.err = false, fmt.Errorf("backupstore: store chunk %s: %w", o.c, err)
			return 1, nil
		default:
			return len(ops), err
		}
	}
	if err := txn.Commit(); err != nil {
		return len(ops), err
	}
	return len(ops), nil
}

// apply adds one write to txn. A refusal (the quota) is the write's own
// result and leaves txn unchanged; an error is the transaction's.
func (cs *chunkStore) apply(txn *badger.Txn, o *chunkOp) error {
	o.changed, o.err = false, nil
	mk, ck := cs.db.Key(ckey(keyMeta, o.c.Bytes())), cs.db.Key(ckey(keyChunk, o.c.Bytes()))
	m, held, err := getMeta(txn, mk)
	if err != nil {
		return err
	}
	if o.remove {
		if !held || (!o.owner.IsZero() && !m.Owner.Equal(o.owner)) {
			return nil
		}
	} else {
		if held {
			return nil
		}
		m = o.meta
	}
	uk := cs.db.Key(ckey(keyUsage, m.Owner.Bytes()))
	u, err := getUsage(txn, uk)
	if err != nil {
		return err
	}
	if o.remove {
		u.Bytes -= min(u.Bytes, m.Size)
		u.Chunks -= min(u.Chunks, 1)
		if err := txn.Delete(ck); err != nil {
			return err
		}
		if err := txn.Delete(mk); err != nil {
			return err
		}
		if u == (Usage{}) {
			err = txn.Delete(uk)
		} else {
			err = setCBOR(txn, uk, u)
		}
	} else {
		if u.Bytes+m.Size > cs.quotaBytes || u.Chunks+1 > cs.quotaChunks {
			o.err = fmt.Errorf("%w: user %s holds %d bytes in %d chunks here; %d more bytes would pass the quota of %d bytes in %d chunks",
				ErrQuotaExceeded, m.Owner, u.Bytes, u.Chunks, m.Size, cs.quotaBytes, cs.quotaChunks)
			return nil
		}
		u.Bytes += m.Size
		u.Chunks++
		if err := txn.Set(ck, o.data); err != nil {
			return err
		}
		if err := setCBOR(txn, mk, m); err != nil {
			return err
		}
		err = setCBOR(txn, uk, u)
	}
	if err != nil {
		return err
	}
	o.changed = true
	return nil
}

// update runs fn in a transaction, again when it conflicts with another.
func (cs *chunkStore) update(fn func(txn *badger.Txn) error) error {
	for range maxTxnRetries {
		err := cs.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("backupstore: store: %w", badger.ErrConflict)
}

func getUsage(txn *badger.Txn, k []byte) (Usage, error) {
	var u Usage
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	err = item.Value(func(v []byte) error { return decMode.Unmarshal(v, &u) })
	return u, err
}

func getMeta(txn *badger.Txn, k []byte) (chunkMeta, bool, error) {
	var m chunkMeta
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	err = item.Value(func(v []byte) error { return decMode.Unmarshal(v, &m) })
	return m, err == nil, err
}

func setCBOR(txn *badger.Txn, k []byte, v any) error {
	b, err := encMode.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(k, b)
}

// put stores data under c, charged to m.Owner, unless the node holds c
// already (then nothing changes and isNew is false). The quota check, the
// chunk, its metadata and the usage commit together, after every write
// queued before: concurrent uploads cannot overrun the quota together.
// data must not change until put returns.
func (cs *chunkStore) put(ctx context.Context, c cid.Cid, data []byte, m chunkMeta) (isNew bool, err error) {
	o := &chunkOp{c: c, data: data, meta: m}
	if err := cs.submit(ctx, o); err != nil {
		return false, err
	}
	return o.changed, nil
}

// remove deletes c and uncharges its owner. With owner set, only a chunk
// charged to owner is removed. It reports whether c was removed.
func (cs *chunkStore) remove(ctx context.Context, c cid.Cid, owner ident.UserID) (bool, error) {
	o := &chunkOp{remove: true, c: c, owner: owner}
	if err := cs.submit(ctx, o); err != nil {
		return false, err
	}
	return o.changed, nil
}

// errCorrupt reports a stored chunk whose bytes no longer match its CID.
var errCorrupt = errors.New("backupstore: stored chunk does not match its CID")

// get returns the chunk stored under c after checking it against c. A
// chunk that fails the check is reported with errCorrupt and never returned.
func (cs *chunkStore) get(c cid.Cid) ([]byte, error) {
	return cs.getInto(c, func(n int) []byte { return make([]byte, n) })
}

// getInto is get into a buffer from alloc.
func (cs *chunkStore) getInto(c cid.Cid, alloc func(n int) []byte) ([]byte, error) {
	var data []byte
	err := cs.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(cs.db.Key(ckey(keyChunk, c.Bytes())))
		if err != nil {
			return err
		}
		size := item.ValueSize()
		if size <= 0 || size > wire.MaxChunkSize {
			return fmt.Errorf("%w: %s: stored value of %d bytes", errCorrupt, c, size)
		}
		data, err = item.ValueCopy(alloc(int(size))[:0])
		return err
	})
	if errors.Is(err, errCorrupt) {
		return nil, err
	}
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("backupstore: read chunk %s: %w", c, err)
	}
	if err := wire.CheckChunk(c, data); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errCorrupt, c, err)
	}
	return data, nil
}

// has reports whether a chunk is stored under c.
func (cs *chunkStore) has(c cid.Cid) (bool, error) {
	return cs.db.Has(ckey(keyChunk, c.Bytes()))
}

// meta returns the metadata of c.
func (cs *chunkStore) meta(c cid.Cid) (chunkMeta, bool, error) {
	var m chunkMeta
	var held bool
	err := cs.db.View(func(txn *badger.Txn) error {
		var err error
		m, held, err = getMeta(txn, cs.db.Key(ckey(keyMeta, c.Bytes())))
		return err
	})
	return m, held, err
}

// usage returns what user holds on this node.
func (cs *chunkStore) usage(user ident.UserID) (Usage, error) {
	var u Usage
	err := cs.db.View(func(txn *badger.Txn) error {
		var err error
		u, err = getUsage(txn, cs.db.Key(ckey(keyUsage, user.Bytes())))
		return err
	})
	return u, err
}

// heldChunk is one entry of the metadata listing.
type heldChunk struct {
	CID  cid.Cid
	Meta chunkMeta
}

// list returns the metadata of every chunk held, in CID order.
func (cs *chunkStore) list() ([]heldChunk, error) {
	var out []heldChunk
	err := cs.db.Iterate([]byte(keyMeta), false, func(k, v []byte) error {
		c, err := wire.ChunkCIDFromBytes(bytes.TrimPrefix(k, []byte(keyMeta)))
		if err != nil {
			return fmt.Errorf("backupstore: stored metadata key: %w", err)
		}
		var m chunkMeta
		if err := decMode.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("backupstore: stored metadata of %s: %w", c, err)
		}
		out = append(out, heldChunk{CID: c, Meta: m})
		return nil
	})
	return out, err
}

// pointer returns the newest pointer record of user stored here.
func (cs *chunkStore) pointer(user ident.UserID) (wire.PointerRecord, []byte, error) {
	b, err := cs.db.Get(ckey(keyPointer, user.Bytes()))
	if errors.Is(err, store.ErrNotFound) {
		return wire.PointerRecord{}, nil, ErrNotFound
	}
	if err != nil {
		return wire.PointerRecord{}, nil, fmt.Errorf("backupstore: read pointer of %s: %w", user, err)
	}
	r, err := wire.DecodePointerRecord(b)
	if err != nil {
		return wire.PointerRecord{}, nil, fmt.Errorf("backupstore: stored pointer of %s: %w", user, err)
	}
	return r, b, nil
}

// putPointer stores r (already verified) unless the stored pointer of its
// user is newer; the same pointer again is accepted and changes nothing.
func (cs *chunkStore) putPointer(r wire.PointerRecord, encoded []byte) error {
	k := cs.db.Key(ckey(keyPointer, r.Pointer.User.Bytes()))
	return cs.update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			var cur []byte
			if cur, err = item.ValueCopy(nil); err != nil {
				return err
			}
			if bytes.Equal(cur, encoded) {
				return nil
			}
			old, err := wire.DecodePointerRecord(cur)
			if err == nil && !r.Pointer.After(old.Pointer) {
				return fmt.Errorf("%w: stored pointer of %s names %s at %s", ErrStalePointer, r.Pointer.User, old.Pointer.Manifest, old.Pointer.Time.Format(time.RFC3339Nano))
			}
		}
		return txn.Set(k, encoded)
	})
}

// pointers returns every stored pointer record, encoded.
func (cs *chunkStore) pointers() ([][]byte, error) {
	var out [][]byte
	err := cs.db.Iterate([]byte(keyPointer), false, func(_, v []byte) error {
		out = append(out, bytes.Clone(v))
		return nil
	})
	return out, err
}
