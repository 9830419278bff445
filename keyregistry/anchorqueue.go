package keyregistry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/store"
)

// AnchorQueue receives every link the registry accepts, in order, for
// anchoring on Cardano. EnqueueWith writes the queue entry and whatever
// with writes (the chain change that accepted the link) in one badger
// transaction, durable when it returns: a link is never stored without
// being queued, nor queued without being stored.
type AnchorQueue interface {
	EnqueueWith(user ident.UserID, link ident.Link, with func(txn *badger.Txn) error) error
}

// QueuedLink is one entry of a StoreQueue.
type QueuedLink struct {
	Seq  uint64 // position in the queue, from 1
	User ident.UserID
	Link []byte // the link's canonical encoding
}

// StoreQueue is a persistent FIFO AnchorQueue in the node's store, under
// the "anchor/" keys of the view it is given. The anchoring service reads
// it with Next and removes what it anchored with Ack.
type StoreQueue struct {
	p *store.Prefixed
	d *store.Datastore

	mu   sync.Mutex
	next uint64 // seq of the next entry to enqueue

	waiting   atomic.Int64  // entries in the queue
	threshold atomic.Int64  // signal full once waiting reaches it (0: never)
	fullCh    chan struct{} // signalled when waiting reaches threshold
}

var keyAnchorNext = ds.NewKey("/anchor-next")

const anchorPrefix = "/anchor/"

type queuedEntry struct {
	User ident.UserID `cbor:"1,keyasint"`
	Link []byte       `cbor:"2,keyasint"`
}

// NewStoreQueue opens the queue kept in p.
func NewStoreQueue(p *store.Prefixed) (*StoreQueue, error) {
	q := &StoreQueue{p: p, d: p.Datastore(), next: 1, fullCh: make(chan struct{}, 1)}
	v, err := q.d.Get(context.Background(), keyAnchorNext)
	switch {
	case errors.Is(err, ds.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("keyregistry: anchor queue: %w", err)
	case len(v) != 8:
		return nil, fmt.Errorf("keyregistry: anchor queue: bad counter (%d bytes)", len(v))
	default:
		q.next = binary.BigEndian.Uint64(v)
	}
	n, err := q.Len()
	if err != nil {
		return nil, fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	q.waiting.Store(int64(n))
	return q, nil
}

func anchorKey(seq uint64) ds.Key {
	// Zero-padded so that key order is queue order.
	return ds.NewKey(anchorPrefix + fmt.Sprintf("%020d", seq))
}

// Enqueue queues link of user on its own.
func (q *StoreQueue) Enqueue(user ident.UserID, link ident.Link) error {
	return q.EnqueueWith(user, link, nil)
}

// EnqueueWith implements AnchorQueue: the entry, the advanced counter and
// the writes of with (which may be nil) are one transaction.
func (q *StoreQueue) EnqueueWith(user ident.UserID, link ident.Link, with func(txn *badger.Txn) error) error {
	v, err := recEnc.Marshal(queuedEntry{User: user, Link: link.Encode()})
	if err != nil {
		return fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var cnt [8]byte
	binary.BigEndian.PutUint64(cnt[:], q.next+1)
	err = q.p.Update(func(txn *badger.Txn) error {
		if with != nil {
			if err := with(txn); err != nil {
				return err
			}
		}
		return errors.Join(
			txn.Set(q.p.Key(anchorKey(q.next).Bytes()), v),
			txn.Set(q.p.Key(keyAnchorNext.Bytes()), cnt[:]))
	})
	if err != nil {
		return fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	q.next++
	if w, t := q.waiting.Add(1), q.threshold.Load(); t > 0 && w >= t {
		select {
		case q.fullCh <- struct{}{}:
		default:
		}
	}
	return nil
}

// full returns a channel that receives when at least n entries wait.
func (q *StoreQueue) full(n int) <-chan struct{} {
	q.threshold.Store(int64(n))
	if q.waiting.Load() >= int64(n) {
		select {
		case q.fullCh <- struct{}{}:
		default:
		}
	}
	return q.fullCh
}

// Next returns up to n entries from the front of the queue, oldest first.
func (q *StoreQueue) Next(n int) ([]QueuedLink, error) {
	var out []QueuedLink
	errStop := errors.New("stop")
	err := q.p.Iterate([]byte(anchorPrefix), false, func(k, v []byte) error {
		if len(out) >= n {
			return errStop
		}
		seq, err := strconv.ParseUint(string(k[len(anchorPrefix):]), 10, 64)
		if err != nil {
			return fmt.Errorf("bad key %q", k)
		}
		var e queuedEntry
		if err := cbor.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("entry %d: %w", seq, err)
		}
		out = append(out, QueuedLink{Seq: seq, User: e.User, Link: e.Link})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	return out, nil
}

// Ack removes every entry with a seq up to and including seq.
func (q *StoreQueue) Ack(seq uint64) error {
	err := q.p.Update(func(txn *badger.Txn) error { return q.AckTxn(txn, seq) })
	q.Recount()
	return err
}

// Recount counts the entries again, after AckTxn's transaction committed.
func (q *StoreQueue) Recount() {
	if n, err := q.Len(); err == nil {
		q.waiting.Store(int64(n))
	}
}

// AckTxn removes, inside txn, every entry with a seq up to and including
// seq, so that the anchoring service can ack in the transaction that
// records what it anchored.
func (q *StoreQueue) AckTxn(txn *badger.Txn, seq uint64) error {
	entries, err := q.Next(int(min(seq, 1<<20)))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Seq > seq {
			break
		}
		if err := txn.Delete(q.p.Key(anchorKey(e.Seq).Bytes())); err != nil {
			return fmt.Errorf("keyregistry: anchor queue: %w", err)
		}
	}
	return nil
}

// Len is the number of entries in the queue.
func (q *StoreQueue) Len() (int, error) {
	n := 0
	err := q.p.Iterate([]byte(anchorPrefix), true, func([]byte, []byte) error { n++; return nil })
	return n, err
}
