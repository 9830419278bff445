package keyregistry

import (
	"bytes"
	"testing"
)

// TestVerifiedRecordsMissOnOtherBytes: the cache answers only for the
// exact bytes and user it verified; damaged bytes are verified (and
// refused) again.
func TestVerifiedRecordsMissOnOtherBytes(t *testing.T) {
	c := testChain(t, testKeys(t), testKeys(t))
	rec := c.Record().Encode()
	user := c.Set.User()
	var v verifiedRecords
	first, err := v.decode(rec, user)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.decode(rec, user)
	if err != nil || again.Version() != first.Version() || again.Version() != c.Version() {
		t.Fatalf("cached decode: %v, version %d", err, again.Version())
	}
	if len(v.m) != 1 {
		t.Fatalf("%d cached records, want 1", len(v.m))
	}
	bad := bytes.Clone(rec)
	bad[len(bad)-3] ^= 0x01
	if _, err := v.decode(bad, user); err == nil {
		t.Fatal("damaged record bytes decoded from the cache")
	}
	other := testChain(t, testKeys(t)).Set.User()
	if _, err := v.decode(rec, other); err == nil {
		t.Fatal("a record verified for one user answered for another")
	}
}
