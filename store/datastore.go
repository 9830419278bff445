package store

import (
	"context"
	"errors"

	badger "github.com/dgraph-io/badger/v4"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// Datastore adapts a prefixed view to the go-datastore interface that the
// libp2p DHT keeps its records in, so the records this node holds for the
// network live in the node's one database and survive restarts.
type Datastore struct {
	p *Prefixed
}

var _ ds.Batching = (*Datastore)(nil)

// Datastore returns the go-datastore view of p.
func (p *Prefixed) Datastore() *Datastore { return &Datastore{p: p} }

// Get implements ds.Read.
func (d *Datastore) Get(_ context.Context, key ds.Key) ([]byte, error) {
	v, err := d.p.Get(key.Bytes())
	if errors.Is(err, ErrNotFound) {
		return nil, ds.ErrNotFound
	}
	return v, err
}

// Has implements ds.Read.
func (d *Datastore) Has(_ context.Context, key ds.Key) (bool, error) {
	return d.p.Has(key.Bytes())
}

// GetSize implements ds.Read.
func (d *Datastore) GetSize(_ context.Context, key ds.Key) (int, error) {
	size := -1
	err := d.p.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(d.p.Key(key.Bytes()))
		if err != nil {
			return err
		}
		size = int(item.ValueSize())
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return -1, ds.ErrNotFound
	}
	return size, err
}

// Query implements ds.Read. Results are collected under one read
// transaction, then filtered, ordered and paged by go-datastore's reference
// implementation.
func (d *Datastore) Query(_ context.Context, q query.Query) (query.Results, error) {
	prefix := ds.NewKey(q.Prefix).String()
	if prefix != "/" {
		prefix += "/"
	}
	if q.Prefix == "" {
		prefix = ""
	}
	var entries []query.Entry
	err := d.p.Iterate([]byte(prefix), q.KeysOnly, func(k, v []byte) error {
		e := query.Entry{Key: string(k), Size: len(v)}
		if !q.KeysOnly {
			e.Value = v
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	naive := q
	naive.Prefix = ""
	return query.NaiveQueryApply(naive, query.ResultsWithEntries(q, entries)), nil
}

// Put implements ds.Write.
func (d *Datastore) Put(_ context.Context, key ds.Key, value []byte) error {
	return d.p.Put(key.Bytes(), value)
}

// Delete implements ds.Write.
func (d *Datastore) Delete(_ context.Context, key ds.Key) error {
	return d.p.Delete(key.Bytes())
}

// Sync implements ds.Datastore. Committed badger writes are already in the
// value log; Sync forces it to disk.
func (d *Datastore) Sync(context.Context, ds.Key) error { return d.p.db.Sync() }

// Close implements ds.Datastore. The database belongs to the node, which
// closes it after every service has stopped, so this does nothing.
func (d *Datastore) Close() error { return nil }

// Batch implements ds.Batching with a badger write batch.
func (d *Datastore) Batch(context.Context) (ds.Batch, error) {
	return &batch{p: d.p, wb: d.p.db.NewWriteBatch()}, nil
}

type batch struct {
	p  *Prefixed
	wb *badger.WriteBatch
}

func (b *batch) Put(_ context.Context, key ds.Key, value []byte) error {
	return b.wb.Set(b.p.Key(key.Bytes()), value)
}

func (b *batch) Delete(_ context.Context, key ds.Key) error {
	return b.wb.Delete(b.p.Key(key.Bytes()))
}

func (b *batch) Commit(context.Context) error { return b.wb.Flush() }
