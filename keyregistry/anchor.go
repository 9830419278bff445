package keyregistry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/store"
)

// AnchorQueue receives every link the registry accepts, in order, for
// anchoring on Cardano. Enqueue must be durable when it returns.
type AnchorQueue interface {
	Enqueue(user e2ee.UserID, link e2ee.Link) error
}

// QueuedLink is one entry of a StoreQueue.
type QueuedLink struct {
	Seq  uint64 // position in the queue, from 1
	User e2ee.UserID
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
}

var keyAnchorNext = ds.NewKey("/anchor-next")

const anchorPrefix = "/anchor/"

type queuedEntry struct {
	User e2ee.UserID `cbor:"1,keyasint"`
	Link []byte      `cbor:"2,keyasint"`
}

// NewStoreQueue opens the queue kept in p.
func NewStoreQueue(p *store.Prefixed) (*StoreQueue, error) {
	q := &StoreQueue{p: p, d: p.Datastore(), next: 1}
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
	return q, nil
}

func anchorKey(seq uint64) ds.Key {
	// Zero-padded so that key order is queue order.
	return ds.NewKey(anchorPrefix + fmt.Sprintf("%020d", seq))
}

// Enqueue implements AnchorQueue: the entry and the advanced counter are
// written in one batch.
func (q *StoreQueue) Enqueue(user e2ee.UserID, link e2ee.Link) error {
	v, err := recEnc.Marshal(queuedEntry{User: user, Link: link.Encode()})
	if err != nil {
		return fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	ctx := context.Background()
	b, _ := q.d.Batch(ctx)
	var cnt [8]byte
	binary.BigEndian.PutUint64(cnt[:], q.next+1)
	if err := errors.Join(b.Put(ctx, anchorKey(q.next), v), b.Put(ctx, keyAnchorNext, cnt[:]), b.Commit(ctx)); err != nil {
		return fmt.Errorf("keyregistry: anchor queue: %w", err)
	}
	q.next++
	return nil
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
	entries, err := q.Next(int(min(seq, 1<<20)))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Seq > seq {
			break
		}
		if err := q.d.Delete(context.Background(), anchorKey(e.Seq)); err != nil {
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
