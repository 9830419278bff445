package backupstore

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// fakeHost is a Host without a network.
type fakeHost struct {
	host.Host // only RemoveStreamHandler is called
	vals      *p2p.Validators
}

func (h *fakeHost) ID() peer.ID                                             { return "self" }
func (h *fakeHost) Handle(string, protocol.ID, network.StreamHandler) error { return nil }
func (h *fakeHost) Libp2p() host.Host                                       { return h }
func (h *fakeHost) RemoveStreamHandler(protocol.ID)                         {}
func (h *fakeHost) RoutingTableSize() int                                   { return 0 }
func (h *fakeHost) Validators() *p2p.Validators                             { return h.vals }
func (h *fakeHost) ClosestPeers(context.Context, []byte, int, protocol.ID) ([]peer.ID, error) {
	return nil, errors.New("no routing in this test")
}

type noUsers struct{}

func (noUsers) Devices(context.Context, ident.UserID) (ident.DeviceSet, error) {
	return ident.DeviceSet{}, errors.New("no users in this test")
}

func (noUsers) StoredDevices(context.Context, ident.UserID) (ident.DeviceSet, bool) {
	return ident.DeviceSet{}, false
}

// New starts nothing: a service built in a bubble and never started
// leaves no goroutine behind (its chunk store's committer waits for
// Start), and Stop without Start returns.
func TestNewStartsNoGoroutine(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		s, err := New(DefaultConfig(), &fakeHost{vals: p2p.NewValidators()}, nil, db.Prefix("backup/"), noUsers{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.cs.put(t.Context(), wire.ChunkCID([]byte("early")), []byte("early"), chunkMeta{}); err == nil {
			t.Fatal("a write before Start succeeded")
		}
		newChunkStore(db.Prefix("other/"), 1, 1)
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
	})
}
