package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	dstest "github.com/ipfs/go-datastore/test"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPrefixesAreIsolated(t *testing.T) {
	db := openTest(t)
	a, b := db.Prefix("a/"), db.Prefix("b/")
	if err := a.Put([]byte("k"), []byte("in a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Errorf("b sees a's key: %v", err)
	}
	if ok, _ := b.Has([]byte("k")); ok {
		t.Error("b.Has(a's key)")
	}
	for i := range 3 {
		b.Put(fmt.Appendf(nil, "x/%d", i), []byte{byte(i)})
	}
	b.Put([]byte("y"), []byte("other"))
	var keys []string
	err := b.Iterate([]byte("x/"), false, func(k, v []byte) error {
		keys = append(keys, fmt.Sprintf("%s=%x", k, v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(keys); got != "[x/0=00 x/1=01 x/2=02]" {
		t.Errorf("iterate = %s", got)
	}
	if err := b.Delete([]byte("x/1")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Has([]byte("x/1")); ok {
		t.Error("deleted key still there")
	}
	if v, err := a.Get([]byte("k")); err != nil || !bytes.Equal(v, []byte("in a")) {
		t.Errorf("a.Get = %q, %v", v, err)
	}
}

func TestValuesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	db.Prefix("p/").Put([]byte("k"), []byte("v"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !db.IsClosed() {
		t.Error("IsClosed after Close")
	}
	db, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := db.Prefix("p/").Get([]byte("k")); err != nil || string(v) != "v" {
		t.Errorf("after reopen: %q, %v", v, err)
	}
}

// TestDatastoreConformance runs go-datastore's own test suite against the
// adapter the DHT keeps its records in.
func TestDatastoreConformance(t *testing.T) {
	dstest.SubtestAll(t, openTest(t).Prefix("dht/").Datastore())
}
