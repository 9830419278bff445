// Package relay holds encrypted envelopes for devices that are not online:
// per-device mailboxes in the node's store, on the relays closest to each.
package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Mailbox limits and defaults.
const (
	// DefaultMailboxCap is the number of envelopes a device's mailbox holds.
	DefaultMailboxCap = 10_000
	// maxCommitBatch bounds how many envelopes one group commit takes.
	maxCommitBatch = 4096
	// expireBatch bounds the envelopes one expiry transaction deletes.
	expireBatch = 1000
	// txnSoftLimit is the size at which a group commit starts a new
	// transaction, well below badger's limit for one transaction.
	txnSoftLimit = 4 << 20
	// envelopeWriteOverhead estimates the index entries and key bytes one
	// stored envelope adds to a transaction.
	envelopeWriteOverhead = 512
)

// Key layout inside the relay's view of the store. Device IDs are their
// 36-byte binary CIDs; numbers are big-endian so keys sort by them.
//
//	m/<device>/<seq>          → encoded envelope     (the mailbox, in arrival order)
//	i/<envelope ID>           → device, seq, expiry  (dedup and ack lookup)
//	x/<expiry ms>/<device>/<seq> → empty             (expiry index)
//	n/<device>                → count                (cap)
//	s/<device>                → last seq
const (
	pMail   = "m/"
	pID     = "i/"
	pExpiry = "x/"
	pCount  = "n/"
	pSeq    = "s/"
)

// Stored is an envelope in a mailbox with its place in it.
type Stored struct {
	Seq      uint64
	Envelope wire.Envelope
}

// PutResult is what happened to one envelope of a Put.
type PutResult struct {
	// Seq is the envelope's place in its mailbox.
	Seq uint64
	// Duplicate reports that the mailbox already held this envelope ID.
	Duplicate bool
	// Err is wire.ErrMailboxFull, wire.ErrExpired or wire.ErrBadEnvelope; nil when stored.
	Err error
}

// Mailboxes is the relay's pending store: an ordered mailbox per device,
// deduplicated by envelope ID, capped, expiring without scanning. Writes
// from concurrent callers are group-committed: those that arrive while a
// commit runs share the next one, so durability costs one fsync per batch.
type Mailboxes struct {
	view *store.Prefixed
	cap  int
	now  func() time.Time

	reqs chan *putReq
	stop chan struct{}
	wg   sync.WaitGroup
}

type putReq struct {
	envs []wire.Envelope
	res  []PutResult
	err  error
	done chan struct{}
}

// NewMailboxes opens the mailboxes in view. capacity is the cap per device
// (0 means DefaultMailboxCap); now is the clock (nil means time.Now).
func NewMailboxes(view *store.Prefixed, capacity int, now func() time.Time) *Mailboxes {
	if capacity <= 0 {
		capacity = DefaultMailboxCap
	}
	if now == nil {
		now = time.Now
	}
	m := &Mailboxes{view: view, cap: capacity, now: now, reqs: make(chan *putReq), stop: make(chan struct{})}
	m.wg.Add(1)
	go m.commitLoop()
	return m
}

// Close stops the committer after the commit in progress.
func (m *Mailboxes) Close() {
	close(m.stop)
	m.wg.Wait()
}

// Put stores envelopes and returns once they are durably committed (with
// the store's sync writes), with one result per envelope in order.
func (m *Mailboxes) Put(ctx context.Context, envs []wire.Envelope) ([]PutResult, error) {
	r := &putReq{envs: envs, res: make([]PutResult, len(envs)), done: make(chan struct{})}
	select {
	case m.reqs <- r:
	case <-m.stop:
		return nil, errors.New("relay: mailboxes closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	<-r.done // a commit in progress is not abandoned half-way
	return r.res, r.err
}

func (m *Mailboxes) commitLoop() {
	defer m.wg.Done()
	for {
		var batch []*putReq
		select {
		case r := <-m.reqs:
			batch = append(batch, r)
		case <-m.stop:
			return
		}
		n := len(batch[0].envs)
	drain:
		for n < maxCommitBatch {
			select {
			case r := <-m.reqs:
				batch = append(batch, r)
				n += len(r.envs)
			default:
				break drain
			}
		}
		err := m.commit(batch)
		for _, r := range batch {
			if err != nil {
				r.err = err
			}
			close(r.done)
		}
	}
}

// commit writes a batch, in one transaction unless it outgrows
// txnSoftLimit. A failed batch may be partly committed; senders retry, and
// envelope IDs make the retry idempotent.
func (m *Mailboxes) commit(batch []*putReq) error {
	now := m.now()
	txn := m.view.NewTransaction(true)
	defer func() { txn.Discard() }()
	pending := 0
	for _, r := range batch {
		for i, e := range r.envs {
			size := len(e.Ciphertext) + envelopeWriteOverhead
			if pending > 0 && pending+size > txnSoftLimit {
				if err := txn.Commit(); err != nil {
					return fmt.Errorf("relay: commit: %w", err)
				}
				txn = m.view.NewTransaction(true)
				pending = 0
			}
			res, err := m.put(txn, e, now)
			if err != nil {
				return fmt.Errorf("relay: store envelope %s: %w", e.ID, err)
			}
			r.res[i] = res
			pending += size
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("relay: commit: %w", err)
	}
	return nil
}

func (m *Mailboxes) put(txn *badger.Txn, e wire.Envelope, now time.Time) (PutResult, error) {
	if err := e.Check(); err != nil {
		return PutResult{Err: err}, nil
	}
	if !e.Expiry().After(now) {
		return PutResult{Err: wire.ErrExpired}, nil
	}
	dev := e.To.Bytes()
	if item, err := txn.Get(m.key(pID, e.ID[:])); err == nil {
		var seq uint64
		err := item.Value(func(v []byte) error {
			if len(v) >= len(dev)+8 {
				seq = binary.BigEndian.Uint64(v[len(dev):])
			}
			return nil
		})
		return PutResult{Seq: seq, Duplicate: true}, err
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return PutResult{}, err
	}
	count, err := m.getUint(txn, m.key(pCount, dev))
	if err != nil {
		return PutResult{}, err
	}
	if count >= uint64(m.cap) {
		return PutResult{Err: wire.ErrMailboxFull}, nil
	}
	seq, err := m.getUint(txn, m.key(pSeq, dev))
	if err != nil {
		return PutResult{}, err
	}
	seq++
	enc, err := e.Encode()
	if err != nil {
		return PutResult{Err: err}, nil
	}
	exp := uint64(e.Expiry().UnixMilli())
	writes := []struct{ k, v []byte }{
		{m.key(pMail, dev, u64(seq)), enc},
		{m.key(pID, e.ID[:]), cat(dev, u64(seq), u64(exp))},
		{m.key(pExpiry, u64(exp), dev, u64(seq)), nil},
		{m.key(pCount, dev), u64(count + 1)},
		{m.key(pSeq, dev), u64(seq)},
	}
	for _, w := range writes {
		if err := txn.Set(w.k, w.v); err != nil {
			return PutResult{}, err
		}
	}
	return PutResult{Seq: seq}, nil
}

// List returns up to limit envelopes of device with Seq > after, oldest
// first, skipping those already expired.
func (m *Mailboxes) List(device e2ee.DeviceID, after uint64, limit int) ([]Stored, error) {
	now := m.now()
	dev := device.Bytes()
	prefix := m.key(pMail, dev)
	var out []Stored
	err := m.view.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(m.key(pMail, dev, u64(after+1))); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			var e wire.Envelope
			err := item.Value(func(v []byte) error {
				var err error
				e, err = wire.DecodeEnvelope(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("relay: mailbox %s seq %d: %w", device, seq, err)
			}
			if e.Expiry().After(now) {
				out = append(out, Stored{Seq: seq, Envelope: e})
			}
		}
		return nil
	})
	return out, err
}

// Count is the number of envelopes in device's mailbox.
func (m *Mailboxes) Count(device e2ee.DeviceID) (int, error) {
	var n uint64
	err := m.view.View(func(txn *badger.Txn) error {
		var err error
		n, err = m.getUint(txn, m.key(pCount, device.Bytes()))
		return err
	})
	return int(n), err
}

// Ack deletes the envelopes ids from device's mailbox: the device has them.
// IDs that are unknown, already deleted or addressed to another device are
// ignored. It returns how many were deleted.
func (m *Mailboxes) Ack(device e2ee.DeviceID, ids []wire.EnvelopeID) (int, error) {
	dev := device.Bytes()
	deleted := 0
	err := m.view.Update(func(txn *badger.Txn) error {
		for _, id := range ids {
			item, err := txn.Get(m.key(pID, id[:]))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != len(dev)+16 || string(v[:len(dev)]) != string(dev) {
				continue
			}
			if err := m.delete(txn, dev, id[:], v[len(dev):len(dev)+8], v[len(dev)+8:]); err != nil {
				return err
			}
			deleted++
		}
		return nil
	})
	return deleted, err
}

// Expire deletes every envelope whose expiry is not after now, walking the
// expiry index only up to now. It returns how many were deleted.
func (m *Mailboxes) Expire(now time.Time) (int, error) {
	total := 0
	for {
		n, err := m.expireSome(now)
		total += n
		if err != nil || n < expireBatch {
			return total, err
		}
	}
}

func (m *Mailboxes) expireSome(now time.Time) (int, error) {
	type victim struct{ dev, seq, exp []byte }
	var vs []victim
	prefix := m.key(pExpiry)
	limit := uint64(now.UnixMilli())
	err := m.view.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(vs) < expireBatch; it.Next() {
			k := it.Item().KeyCopy(nil)[len(prefix):]
			if len(k) < 16 || binary.BigEndian.Uint64(k[:8]) > limit {
				break
			}
			vs = append(vs, victim{exp: k[:8], dev: k[8 : len(k)-8], seq: k[len(k)-8:]})
		}
		return nil
	})
	if err != nil || len(vs) == 0 {
		return 0, err
	}
	err = m.view.Update(func(txn *badger.Txn) error {
		for _, v := range vs {
			item, err := txn.Get(m.key(pMail, v.dev, v.seq))
			if err != nil {
				return err
			}
			enc, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			e, err := wire.DecodeEnvelope(enc)
			if err != nil {
				return err
			}
			if err := m.delete(txn, v.dev, e.ID[:], v.seq, v.exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("relay: expire: %w", err)
	}
	return len(vs), nil
}

// delete removes one envelope and its index entries, and decrements the count.
func (m *Mailboxes) delete(txn *badger.Txn, dev, id, seq, exp []byte) error {
	for _, k := range [][]byte{m.key(pMail, dev, seq), m.key(pID, id), m.key(pExpiry, exp, dev, seq)} {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	count, err := m.getUint(txn, m.key(pCount, dev))
	if err != nil {
		return err
	}
	if count <= 1 {
		return txn.Delete(m.key(pCount, dev))
	}
	return txn.Set(m.key(pCount, dev), u64(count-1))
}

func (m *Mailboxes) getUint(txn *badger.Txn, k []byte) (uint64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("relay: corrupt counter %q", k)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

func (m *Mailboxes) key(prefix string, parts ...[]byte) []byte {
	return m.view.Key(cat(append([][]byte{[]byte(prefix)}, parts...)...))
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
