package relay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// pipeStream is a stream over one end of a net.Pipe.
type pipeStream struct {
	network.Stream // only the methods below are called
	conn           net.Conn
}

func (s *pipeStream) Read(b []byte) (int, error)         { return s.conn.Read(b) }
func (s *pipeStream) Write(b []byte) (int, error)        { return s.conn.Write(b) }
func (s *pipeStream) Close() error                       { return s.conn.Close() }
func (s *pipeStream) CloseWrite() error                  { return nil }
func (s *pipeStream) Reset() error                       { return s.conn.Close() }
func (s *pipeStream) SetDeadline(t time.Time) error      { return s.conn.SetDeadline(t) }
func (s *pipeStream) SetReadDeadline(t time.Time) error  { return s.conn.SetReadDeadline(t) }
func (s *pipeStream) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

// fakeRelays answers store streams as relays do: each stream is handled on
// its own, and a relay stores a frame's envelopes when it handles the
// frame. The first stream to a relay in held waits for that channel to be
// closed before it is handled: a relay slow to answer.
type fakeRelays struct {
	mu     sync.Mutex
	held   map[peer.ID]chan struct{}
	stored map[peer.ID][]string // ciphertexts, in the order each relay stored them
}

func (f *fakeRelays) open(_ context.Context, p peer.ID) (network.Stream, error) {
	here, there := net.Pipe()
	go f.serve(p, there)
	return &pipeStream{conn: here}, nil
}

func (f *fakeRelays) serve(p peer.ID, c net.Conn) {
	defer c.Close()
	b, err := readFrame(bufio.NewReader(c))
	if err != nil {
		return
	}
	req, err := decodeRequest(b)
	if err != nil || req.Type != msgStore {
		return
	}
	f.mu.Lock()
	gate := f.held[p]
	delete(f.held, p)
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	for _, e := range req.Envelopes {
		f.stored[p] = append(f.stored[p], string(e.Ciphertext))
	}
	f.mu.Unlock()
	writeFrame(c, frame{Type: msgStoreResult, Results: make([]string, len(req.Envelopes))})
}

// A device's envelopes sent one Send after the other are stored by every
// relay in that order, even when a relay is still busy with the first
// Send's write (quorum reached without it) as the second Send starts.
func TestSendKeepsOrderOnASlowRelay(t *testing.T) {
	// The store is opened outside the bubble: its background work does
	// not run on the bubble's clock. These tests do not write to it.
	db := openDB(t, t.TempDir())
	defer db.Close()
	synctest.Test(t, func(t *testing.T) {
		relays := []peer.ID{"relay-a", "relay-b", "relay-slow"}
		release := make(chan struct{})
		f := &fakeRelays{held: map[peer.ID]chan struct{}{"relay-slow": release}, stored: make(map[peer.ID][]string)}
		s := newTestService(t, db, &fakeHost{open: f.open, relays: relays})
		dev := testDevice(t)
		var want []string
		for i := range 3 {
			var envs []Envelope
			for j := range 4 {
				body := fmt.Sprintf("frame %d envelope %d", i, j)
				e := env(dev, body, time.Hour)
				e.Time = time.Now() // the bubble's clock
				envs = append(envs, e)
				want = append(want, body)
			}
			res, err := s.Send(context.Background(), envs)
			if err != nil {
				t.Fatal(err)
			}
			for j, r := range res {
				if r.Err != nil {
					t.Fatalf("frame %d envelope %d: %v", i, j, r.Err)
				}
			}
		}
		synctest.Wait()
		close(release)
		synctest.Wait()
		f.mu.Lock()
		for _, p := range relays {
			if got := f.stored[p]; !slices.Equal(got, want) {
				t.Errorf("%s stored %q, want %q", string(p), got, want)
			}
		}
		f.mu.Unlock()
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
	})
}
