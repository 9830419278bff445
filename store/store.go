// Package store is the node's single badger database and the prefixed views
// of it that the node hands to each service.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// ErrNotFound is returned by Get when a key has no value.
var ErrNotFound = errors.New("store: not found")

// DB is the node's badger database. It is opened once per node and closed
// after every service that uses it has stopped.
type DB struct {
	bdb *badger.DB
}

// Options are the settings of the node's database.
type Options struct {
	// Dir is the directory that holds the badger files.
	Dir string
	// SyncWrites makes every committed write durable before it returns.
	SyncWrites bool
	// Logger receives badger's warnings and errors.
	Logger *slog.Logger
}

// Open opens (or creates) the database in opts.Dir.
func Open(opts Options) (*DB, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerLogger{logger.With("component", "badger")}).
		WithMetricsEnabled(false)
	bdb, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", opts.Dir, err)
	}
	return &DB{bdb: bdb}, nil
}

// Close flushes and closes the database.
func (db *DB) Close() error {
	if err := db.bdb.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// IsClosed reports whether Close has been called.
func (db *DB) IsClosed() bool { return db.bdb.IsClosed() }

// Size returns the on-disk size of the LSM tree and of the value log in bytes.
func (db *DB) Size() (lsm, vlog int64) { return db.bdb.Size() }

// Badger returns the underlying database, for services that need batched
// writes. Keys they write must start with their own prefix.
func (db *DB) Badger() *badger.DB { return db.bdb }

// Prefix returns the view of the database under prefix. Each service gets
// its own; prefixes must not be prefixes of one another.
func (db *DB) Prefix(prefix string) *Prefixed {
	return &Prefixed{db: db.bdb, prefix: []byte(prefix)}
}

// Prefixed is a view of the database in which every key is implicitly
// prefixed. It is what services receive from the node.
type Prefixed struct {
	db     *badger.DB
	prefix []byte
}

// Key returns the full database key for k.
func (p *Prefixed) Key(k []byte) []byte {
	full := make([]byte, 0, len(p.prefix)+len(k))
	return append(append(full, p.prefix...), k...)
}

// Get returns a copy of the value stored under k, or ErrNotFound.
func (p *Prefixed) Get(k []byte) ([]byte, error) {
	var v []byte
	err := p.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(p.Key(k))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

// Has reports whether k has a value.
func (p *Prefixed) Has(k []byte) (bool, error) {
	err := p.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(p.Key(k))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Put stores v under k.
func (p *Prefixed) Put(k, v []byte) error {
	return p.db.Update(func(txn *badger.Txn) error { return txn.Set(p.Key(k), v) })
}

// Delete removes k; deleting a missing key is not an error.
func (p *Prefixed) Delete(k []byte) error {
	return p.db.Update(func(txn *badger.Txn) error { return txn.Delete(p.Key(k)) })
}

// Update runs fn in a read-write transaction of the whole database, for
// writes that must commit together; keys must be built with Key. With
// SyncWrites the commit is durable when Update returns: batching many
// writes into one Update costs one fsync.
func (p *Prefixed) Update(fn func(txn *badger.Txn) error) error { return p.db.Update(fn) }

// NewTransaction starts a transaction of the whole database, for writers
// that manage commits themselves (group commit); keys must be built with Key.
func (p *Prefixed) NewTransaction(update bool) *badger.Txn { return p.db.NewTransaction(update) }

// View runs fn in a read-only transaction; keys must be built with Key.
func (p *Prefixed) View(fn func(txn *badger.Txn) error) error { return p.db.View(fn) }

// Iterate calls fn for every key under sub (relative to the view's prefix),
// in key order, with the key stripped of the view's prefix. The slices are
// only valid during the call. Iteration stops at the first error fn returns.
func (p *Prefixed) Iterate(sub []byte, keysOnly bool, fn func(k, v []byte) error) error {
	return p.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = !keysOnly
		opts.Prefix = p.Key(sub)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := bytes.TrimPrefix(item.Key(), p.prefix)
			var v []byte
			if !keysOnly {
				var err error
				if v, err = item.ValueCopy(nil); err != nil {
					return err
				}
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// badgerLogger sends badger's log lines to slog. Badger's info and debug
// lines are chatty start-up details, so they are logged at debug level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(trim(fmt.Sprintf(f, a...))) }

func trim(s string) string { return strings.TrimRight(s, "\n") }
