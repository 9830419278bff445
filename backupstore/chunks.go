package backupstore

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/e2ee"
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
	Owner  e2ee.UserID   `cbor:"1,keyasint"`
	Size   uint64        `cbor:"2,keyasint"`
	Stored int64         `cbor:"3,keyasint"` // unix milliseconds
	Kind   uint8         `cbor:"4,keyasint"`
	Device e2ee.DeviceID `cbor:"5,keyasint"`
	Time   int64         `cbor:"6,keyasint"` // the authorization's unix seconds
	Sig    []byte        `cbor:"7,keyasint"`
	Entry  string        `cbor:"8,keyasint"`
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

// chunkStore is the node's chunks, their metadata and the per-user usage,
// kept consistent by writing all three in one transaction.
type chunkStore struct {
	db          *store.Prefixed
	quotaBytes  uint64
	quotaChunks uint64
}

func ckey(prefix string, b []byte) []byte { return append([]byte(prefix), b...) }

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
// chunk, its metadata and the usage are one transaction: concurrent
// uploads cannot overrun the quota together.
func (cs *chunkStore) put(c cid.Cid, data []byte, m chunkMeta) (isNew bool, err error) {
	mk, ck, uk := cs.db.Key(ckey(keyMeta, c.Bytes())), cs.db.Key(ckey(keyChunk, c.Bytes())), cs.db.Key(ckey(keyUsage, m.Owner.Bytes()))
	err = cs.update(func(txn *badger.Txn) error {
		isNew = false
		if _, held, err := getMeta(txn, mk); err != nil || held {
			return err
		}
		u, err := getUsage(txn, uk)
		if err != nil {
			return err
		}
		if u.Bytes+m.Size > cs.quotaBytes || u.Chunks+1 > cs.quotaChunks {
			return fmt.Errorf("%w: user %s holds %d bytes in %d chunks here; %d more bytes would pass the quota of %d bytes in %d chunks",
				ErrQuotaExceeded, m.Owner, u.Bytes, u.Chunks, m.Size, cs.quotaBytes, cs.quotaChunks)
		}
		u.Bytes += m.Size
		u.Chunks++
		if err := txn.Set(ck, data); err != nil {
			return err
		}
		if err := setCBOR(txn, mk, m); err != nil {
			return err
		}
		isNew = true
		return setCBOR(txn, uk, u)
	})
	return isNew, err
}

// remove deletes c and uncharges its owner. With owner set, only a chunk
// charged to owner is removed. It reports whether c was removed.
func (cs *chunkStore) remove(c cid.Cid, owner e2ee.UserID) (bool, error) {
	mk, ck := cs.db.Key(ckey(keyMeta, c.Bytes())), cs.db.Key(ckey(keyChunk, c.Bytes()))
	removed := false
	err := cs.update(func(txn *badger.Txn) error {
		removed = false
		m, held, err := getMeta(txn, mk)
		if err != nil || !held || (!owner.IsZero() && !m.Owner.Equal(owner)) {
			return err
		}
		uk := cs.db.Key(ckey(keyUsage, m.Owner.Bytes()))
		u, err := getUsage(txn, uk)
		if err != nil {
			return err
		}
		u.Bytes -= min(u.Bytes, m.Size)
		u.Chunks -= min(u.Chunks, 1)
		if err := txn.Delete(ck); err != nil {
			return err
		}
		if err := txn.Delete(mk); err != nil {
			return err
		}
		removed = true
		if u == (Usage{}) {
			return txn.Delete(uk)
		}
		return setCBOR(txn, uk, u)
	})
	return removed, err
}

// errCorrupt reports a stored chunk whose bytes no longer match its CID.
var errCorrupt = errors.New("backupstore: stored chunk does not match its CID")

// get returns the chunk stored under c after checking it against c. A
// chunk that fails the check is reported with errCorrupt and never returned.
func (cs *chunkStore) get(c cid.Cid) ([]byte, error) {
	var data []byte
	err := cs.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(cs.db.Key(ckey(keyChunk, c.Bytes())))
		if err != nil {
			return err
		}
		data, err = item.ValueCopy(nil)
		return err
	})
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
func (cs *chunkStore) usage(user e2ee.UserID) (Usage, error) {
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
func (cs *chunkStore) pointer(user e2ee.UserID) (wire.PointerRecord, []byte, error) {
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
