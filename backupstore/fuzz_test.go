package backupstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/volo-chat/volo/wire"
)

func FuzzDecodeBackupRequest(f *testing.F) {
	c := wire.ChunkCID([]byte("chunk"))
	seed := func(h header) {
		b, err := encMode.Marshal(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	auth := header{User: c.Bytes(), Device: c.Bytes(), Time: 1_800_000_000, Sig: bytes.Repeat([]byte{1}, 64), Entry: "12D3KooWEntry"}
	store := auth
	store.Type, store.CID, store.Kind = msgStore, c.Bytes(), kindChunk
	seed(store)
	release := auth
	release.Type, release.CID = msgRelease, c.Bytes()
	seed(release)
	seed(header{Type: msgGet, CID: c.Bytes()})
	seed(header{Type: msgHas, CIDs: [][]byte{c.Bytes(), c.Bytes()}})
	seed(header{Type: msgError, Code: "x"})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRequest(data)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error without ErrBadFrame: %v", err)
			}
			return
		}
		if r.Type < msgStore || r.Type > msgHas {
			t.Fatalf("accepted request type %d", r.Type)
		}
		if (r.Type != msgHas) && wire.CheckChunkCID(r.CID) != nil {
			t.Fatalf("accepted a bad CID %v", r.CID)
		}
		if _, err := decodeReply(data); err == nil {
			t.Fatal("bytes decode as a request and as a reply")
		}
	})
}

func FuzzDecodeBackupReply(f *testing.F) {
	for _, h := range []header{{Type: msgOK, New: true}, {Type: msgChunk}, {Type: msgHasResult, Held: []byte{0, 1}}, {Type: msgError, Code: "quota_exceeded", Message: "m"}} {
		b, _ := encMode.Marshal(h)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeReply(data)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error without ErrBadFrame: %v", err)
			}
			return
		}
		if r.Type < msgOK || r.Type > msgError {
			t.Fatalf("accepted reply type %d", r.Type)
		}
	})
}

// FuzzPointerValidator feeds the DHT validator of backup pointers any
// value: it never accepts one that does not decode, verify and count at
// the validator's clock, and Select picks only what Validate accepts.
func FuzzPointerValidator(f *testing.F) {
	d := newTestDevice(f)
	now := time.Now()
	m := wire.ChunkCID([]byte("manifest"))
	f.Add(d.pointer(f, m, now))
	f.Add(d.pointer(f, m, now.AddDate(100, 0, 0)))
	f.Add(d.pointer(f, m, now.Add(wire.PointerTimeSkew-time.Second)))
	f.Add([]byte{0xa0})
	v := PointerValidator{Now: func() time.Time { return now }, Chains: fixedUsers{set: d.set}}
	key := wire.PointerKey(d.user())
	f.Fuzz(func(t *testing.T, value []byte) {
		err := v.Validate(key, value)
		i, serr := v.Select(key, [][]byte{value})
		if (err == nil) != (serr == nil) || (serr == nil && i != 0) {
			t.Fatalf("Validate: %v; Select: %d, %v", err, i, serr)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrBadPointer) {
				t.Fatalf("error without ErrBadPointer: %v", err)
			}
			return
		}
		r, err := wire.DecodePointerRecord(value)
		if err != nil {
			t.Fatalf("accepted a value that does not decode: %v", err)
		}
		if r.Pointer.Time.After(now.Add(wire.PointerTimeSkew)) {
			t.Fatalf("accepted a pointer dated %s at %s", r.Pointer.Time, now)
		}
		if _, ok := d.set.Lookup(r.Pointer.Device); !ok {
			t.Fatalf("accepted a pointer of device %s, not active in the known chain", r.Pointer.Device)
		}
	})
}
