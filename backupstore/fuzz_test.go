package backupstore

import (
	"bytes"
	"errors"
	"testing"

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
