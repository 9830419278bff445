package relay

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// fakeHost is a Host without a network: streams come from open, and
// every mailbox is placed on relays.
type fakeHost struct {
	host.Host // only NewStream and RemoveStreamHandler are called
	open      func(ctx context.Context, p peer.ID) (network.Stream, error)
	relays    []peer.ID
}

func (h *fakeHost) ID() peer.ID                                             { return "self" }
func (h *fakeHost) Handle(string, protocol.ID, network.StreamHandler) error { return nil }
func (h *fakeHost) Libp2p() host.Host                                       { return h }
func (h *fakeHost) RemoveStreamHandler(protocol.ID)                         {}
func (h *fakeHost) NewStream(ctx context.Context, p peer.ID, _ ...protocol.ID) (network.Stream, error) {
	return h.open(ctx, p)
}
func (h *fakeHost) ClosestPeers(context.Context, []byte, int, protocol.ID) ([]peer.ID, error) {
	if h.relays == nil {
		return nil, errors.New("no routing in this test")
	}
	return h.relays, nil
}

var errUnreachable = errors.New("unreachable")

// unreachable refuses every stream at once.
func unreachable(context.Context, peer.ID) (network.Stream, error) { return nil, errUnreachable }

// hanging opens no stream until ctx ends.
func hanging(ctx context.Context, _ peer.ID) (network.Stream, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// openDB opens a store in dir; the caller closes it.
func openDB(t *testing.T, dir string) *store.DB {
	t.Helper()
	db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newTestService(t *testing.T, db *store.DB, h Host) *Service {
	t.Helper()
	s, err := NewService(DefaultConfig(), h, db.Prefix("relay/"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func queueCount(s *Service) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues)
}

// The send queue of a relay nobody sent to for queueIdleTimeout is
// released: its workers exit (the bubble ends with no goroutine left
// although the service is never stopped) and its map entry is gone. A
// queue in use keeps its workers.
func TestIdleSendQueuesAreReleased(t *testing.T) {
	// The store is opened outside the bubble: its background work does
	// not run on the bubble's clock. These tests do not write to it.
	db := openDB(t, t.TempDir())
	defer db.Close()
	synctest.Test(t, func(t *testing.T) {
		s := newTestService(t, db, &fakeHost{open: unreachable})
		dev := testDevice(t)
		sendTo := func(p peer.ID) {
			errs := s.storeQueued(context.Background(), p, []Envelope{env(dev, "x", time.Hour)})
			if !errors.Is(errs[0], errUnreachable) {
				t.Fatalf("store on %s: %v, want %v", p, errs[0], errUnreachable)
			}
		}
		for _, p := range []peer.ID{"relay-a", "relay-b", "relay-c"} {
			sendTo(p)
		}
		if n := queueCount(s); n != 3 {
			t.Fatalf("%d send queues, want 3", n)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if n := queueCount(s); n != 3 {
			t.Fatalf("%d send queues after 30 minutes, want 3", n)
		}
		sendTo("relay-a")
		time.Sleep(31 * time.Minute)
		synctest.Wait()
		s.mu.Lock()
		_, kept := s.queues["relay-a"]
		n := len(s.queues)
		s.mu.Unlock()
		if n != 1 || !kept {
			t.Fatalf("an hour after the last send to relay-b and relay-c: %d queues (relay-a kept: %v), want relay-a's only", n, kept)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if n := queueCount(s); n != 0 {
			t.Fatalf("%d send queues of relays gone for an hour, want 0", n)
		}
		// A relay used again gets a new queue.
		sendTo("relay-b")
		if n := queueCount(s); n != 1 {
			t.Fatalf("%d send queues after a new send, want 1", n)
		}
		time.Sleep(queueIdleTimeout + time.Minute)
		synctest.Wait()
	})
}

// Stop answers every queued send, those in flight and those still
// waiting for a worker, instead of leaving their senders (whose context
// never ends, as Send's background writes) waiting forever.
func TestStopAnswersQueuedSends(t *testing.T) {
	// The store is opened outside the bubble: its background work does
	// not run on the bubble's clock. These tests do not write to it.
	db := openDB(t, t.TempDir())
	defer db.Close()
	synctest.Test(t, func(t *testing.T) {
		s := newTestService(t, db, &fakeHost{open: hanging})
		dev := testDevice(t)
		// Each job fills a frame, so a worker takes one at a time: four
		// are in flight, the others wait in the queue.
		const senders = streamsPerRelay + 20
		results := make(chan []error, senders)
		for range senders {
			envs := make([]Envelope, MaxBatch)
			for i := range envs {
				envs[i] = env(dev, "x", time.Hour)
			}
			go func() { results <- s.storeQueued(context.Background(), "relay-a", envs) }()
		}
		synctest.Wait()
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for i := range senders {
			select {
			case errs := <-results:
				for _, err := range errs {
					if err == nil {
						t.Fatalf("sender %d: an envelope stored on a relay that never answered", i)
					}
				}
			default:
				t.Fatalf("%d of %d senders still wait after Stop", senders-i, senders)
			}
		}
		if errs := s.storeQueued(context.Background(), "relay-b", []Envelope{env(dev, "late", time.Hour)}); !errors.Is(errs[0], ErrStopped) {
			t.Fatalf("send after Stop: %v, want ErrStopped", errs[0])
		}
	})
}

// Constructors start nothing: a service and its mailboxes built in a
// bubble and never started leave no goroutine behind.
func TestNewServiceStartsNoGoroutine(t *testing.T) {
	// The store is opened outside the bubble: its background work does
	// not run on the bubble's clock. These tests do not write to it.
	db := openDB(t, t.TempDir())
	defer db.Close()
	synctest.Test(t, func(t *testing.T) {
		newTestService(t, db, &fakeHost{open: unreachable})
		NewMailboxes(db.Prefix("other/"), 0, nil)
	})
}

// Close may be called twice; writes after it fail with ErrStopped, and
// writes before Start fail instead of waiting.
func TestMailboxesCloseTwice(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	m := NewMailboxes(db.Prefix("relay/"), 0, nil)
	dev := testDevice(t)
	if _, err := m.Put(t.Context(), []wire.Envelope{env(dev, "early", time.Hour)}); err == nil {
		t.Fatal("Put before Start succeeded")
	}
	m.Start()
	m.Close()
	m.Close()
	if _, err := m.Put(t.Context(), []wire.Envelope{env(dev, "late", time.Hour)}); !errors.Is(err, ErrStopped) {
		t.Fatalf("Put after Close: %v, want ErrStopped", err)
	}
}
