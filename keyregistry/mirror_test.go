package keyregistry

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/volo-chat/volo/internal/tstest"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/p2p"
)

// genuineAnchor registers a user on a fresh registry that anchors on dn
// and returns the registry, the user's genesis link and the announcement
// of the anchor holding it, as the registry gossips it.
func genuineAnchor(t *testing.T, dn *devnet.Devnet) (*Service, Chain, Announcement) {
	t.Helper()
	s, _ := newTestService(t, DefaultConfig())
	anchorer, err := cardano.NewAnchorer(cardano.AnchorerConfig{Socket: dn.SocketPath(), Network: cardano.Devnet, KeyFile: dn.KeyFile()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anchorer.Close() })
	dial := func(ctx context.Context) (chain.Reader, error) {
		return cardano.DialNodeToClient(ctx, dn.SocketPath(), dn.Magic())
	}
	a, err := NewAnchoring(AnchoringConfig{BatchInterval: time.Hour, BatchMaxLinks: 100, Depth: 1}, s, s.anchors.(*StoreQueue),
		anchorer, dial, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c, err := register(t, s, testKeys(t), "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.newBatch()
	if err != nil || p == nil {
		t.Fatalf("batch: %+v, %v", p, err)
	}
	bc, _ := anchorproof.ParseBatchCID(p.CID)
	raw, _ := s.Batch(bc)
	b, _ := anchorproof.DecodeBatch(raw)
	// The devnet makes blocks only when asked: one after the submission
	// holds the transaction (depth 1).
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				dn.MakeBlock()
			}
		}
	}()
	ann, err := a.publish(t.Context(), bc, anchorproof.TreeOf(b), p.Seq)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := DecodeAnnouncement(ann.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return s, c, dec
}

// bogusPublisher is a stranger libp2p peer that invents an anchor for a
// batch of other people's links, signs it with its own peer key, and
// serves the batch over BatchProtocol, counting the requests.
type bogusPublisher struct {
	host    *p2p.Host
	ann     Announcement
	fetches atomic.Int32
}

func newBogusPublisher(t *testing.T, leaves ...anchorproof.Leaf) *bogusPublisher {
	t.Helper()
	h := newTestHost(t)
	raw := anchorproof.Batch{Leaves: leaves}.Encode()
	tree := anchorproof.TreeOf(anchorproof.Batch{Leaves: leaves})
	an := chain.Anchor{Version: chain.AnchorVersion, Root: tree.Root(), TreeSize: tree.Size(), Seq: 1,
		BatchCID: anchorproof.BatchCID(raw).Bytes(), Node: []byte(h.ID())}
	sig, err := anchorproof.SignAnchor(h.Libp2p().Peerstore().PrivKey(h.ID()), an)
	if err != nil {
		t.Fatal(err)
	}
	// A transaction in a block that no chain holds, claimed to be the very
	// first block so that it would precede every genuine anchor.
	fake := chain.Inclusion{Anchor: an, Block: chain.Point{Slot: 1, Hash: randomBytes(32)}, BlockNo: 1}
	copy(fake.TxID[:], randomBytes(32))
	ann, err := newAnnouncement(fake, sig)
	if err != nil {
		t.Fatal(err)
	}
	// What every node's topic validator sees: the stranger's announcement
	// passes it, its signature being the stranger's own.
	if ann, err = DecodeAnnouncement(ann.Encode()); err != nil {
		t.Fatalf("the bogus announcement does not pass the topic validator: %v", err)
	}
	bp := &bogusPublisher{host: h, ann: ann}
	h.Libp2p().SetStreamHandler(BatchProtocol, func(st network.Stream) {
		bp.fetches.Add(1)
		defer st.Close()
		_, _ = st.Write(raw)
	})
	return bp
}

// counter reads a Prometheus counter.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// connect lets s open streams to the peers of hosts.
func connect(t *testing.T, s *Service, hosts ...host.Host) {
	t.Helper()
	for _, h := range hosts {
		if err := s.net.Host.(host.Host).Connect(t.Context(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
}

// A stranger peer that announces an anchor of its own invention for a
// genuine user's link gets no proof stored and no batch fetched: a node
// without a chain reader refuses publishers it does not trust, a node with
// one refuses an anchor that is not on its chain, and neither lets the
// bogus proof stand in the way of the genuine one.
func TestMirrorRefusesBogusAnchors(t *testing.T) {
	dn := startDevnet(t)
	genuine, c, ann := genuineAnchor(t, dn)
	link, _ := ident.DecodeLink(c.Links[0])
	bogus := newBogusPublisher(t, anchorproof.NewLeaf(c.Set.User(), c.Links[0]))

	readerless := DefaultConfig()
	readerless.TrustedAnchorPublishers = []string{genuine.net.Host.ID().String()}
	noReader, _ := newTestService(t, readerless)
	withReader, _ := newTestService(t, DefaultConfig())
	r, err := cardano.DialNodeToClient(t.Context(), dn.SocketPath(), dn.Magic())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	withReader.mirror.reader.Store(&r)

	for _, tc := range []struct {
		name string
		s    *Service
		want error
	}{
		{"no chain reader", noReader, ErrUncheckedAnchor},
		{"chain reader", withReader, ErrAnchorNotOnChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			connect(t, tc.s, genuine.net.Host.(host.Host), bogus.host.Libp2p())
			before := bogus.fetches.Load()
			outcome, err := tc.s.mirrorAnchor(t.Context(), bogus.ann)
			if outcome != "refused" || !errors.Is(err, tc.want) {
				t.Fatalf("bogus anchor: %s, %v; want refused, %v", outcome, err, tc.want)
			}
			if n := bogus.fetches.Load() - before; n != 0 {
				t.Fatalf("the node fetched the bogus batch %d times", n)
			}
			if _, ok, _ := tc.s.LinkProof(c.Set.User(), link.ID()); ok {
				t.Fatal("a proof was stored from the bogus anchor")
			}
			// Positive control: the genuine anchor is mirrored.
			if outcome, err := tc.s.mirrorAnchor(t.Context(), ann); outcome != "stored" || err != nil {
				t.Fatalf("genuine anchor: %s, %v", outcome, err)
			}
			p, ok, err := tc.s.LinkProof(c.Set.User(), link.ID())
			if err != nil || !ok || !bytes.Equal(p.TxID, ann.TxID) {
				t.Fatalf("genuine proof: %+v %v %v", p, ok, err)
			}
			// Offered again afterwards, the bogus anchor still changes nothing.
			if outcome, _ := tc.s.mirrorAnchor(t.Context(), bogus.ann); outcome != "refused" {
				t.Fatalf("bogus anchor after the genuine one: %s", outcome)
			}
			if p, _, _ := tc.s.LinkProof(c.Set.User(), link.ID()); !bytes.Equal(p.TxID, ann.TxID) {
				t.Fatal("the bogus anchor replaced the genuine proof")
			}
		})
	}

	// The same over gossip: a node without a chain reader receives the
	// stranger's and the genuine announcement on AnchorTopic from the peers
	// that publish them, refuses the first without fetching its batch and
	// mirrors the second.
	t.Run("over gossip", func(t *testing.T) {
		gossiped, _ := newTestService(t, readerless)
		stranger := newBogusPublisher(t, anchorproof.NewLeaf(c.Set.User(), c.Links[0]))
		connect(t, gossiped, genuine.net.Host.(host.Host), stranger.host.Libp2p())
		// The stranger joins the topic as any peer can.
		st, err := stranger.host.Topic(AnchorTopic)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := st.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Cancel()
		// Each publisher knows the node as a subscriber before it publishes.
		for name, ps := range map[string]*pubsub.PubSub{"stranger": stranger.host.PubSub(), "genuine publisher": genuine.net.PubSub.(hostPubSub).h.PubSub()} {
			tstest.WaitFor(t, time.Minute, func() error {
				if !slices.Contains(ps.ListPeers(AnchorTopic), gossiped.net.Host.ID()) {
					return fmt.Errorf("the %s does not see the node on %s", name, AnchorTopic)
				}
				return nil
			})
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := st.Publish(ctx, stranger.ann.Encode()); err != nil {
			t.Fatal(err)
		}
		tstest.WaitFor(t, time.Minute, func() error {
			if n := counter(t, gossiped.am.mirrored.WithLabelValues("refused")); n != 1 {
				return fmt.Errorf("%v gossiped announcements refused, want 1", n)
			}
			return nil
		})
		if err := genuine.mirror.topic.Publish(ctx, ann.Encode()); err != nil {
			t.Fatal(err)
		}
		tstest.WaitFor(t, time.Minute, func() error {
			if n := counter(t, gossiped.am.mirrored.WithLabelValues("stored")); n != 1 {
				return fmt.Errorf("%v gossiped announcements stored, want 1", n)
			}
			return nil
		})
		if n := stranger.fetches.Load(); n != 0 {
			t.Fatalf("the node fetched the bogus batch %d times", n)
		}
		if p, ok, err := gossiped.LinkProof(c.Set.User(), link.ID()); err != nil || !ok || !bytes.Equal(p.TxID, ann.TxID) {
			t.Fatalf("proof after gossip: %+v %v %v", p, ok, err)
		}
	})

	// A publisher's batches count against its budget: one whose batch is
	// larger than what is left of it is refused before anything is fetched.
	small := DefaultConfig()
	small.MirrorBytesPerPublisher = batchFetchLimit(ann.Anchor().TreeSize) - 1
	capped, _ := newTestService(t, small)
	capped.mirror.reader.Store(&r)
	connect(t, capped, genuine.net.Host.(host.Host))
	if outcome, err := capped.mirrorAnchor(t.Context(), ann); outcome != "refused" || !errors.Is(err, ErrMirrorBudget) {
		t.Fatalf("anchor over the publisher's budget: %s, %v", outcome, err)
	}
}

// A publisher's budget is spent by what it sent, kept apart from other
// publishers', and refills over MirrorBudgetWindow.
func TestPublisherBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newPublisherBudget(1000)
		p, q := peer.ID("publisher p"), peer.ID("publisher q")
		spend, ok := b.reserve(p, 1000)
		if !ok {
			t.Fatal("a fresh publisher has no budget")
		}
		spend(600)
		if _, ok := b.reserve(p, 500); ok {
			t.Fatal("500 bytes reserved out of 400 left")
		}
		if _, ok := b.reserve(q, 1000); !ok {
			t.Fatal("another publisher's spending counted against q")
		}
		if _, ok := b.reserve(p, 1001); ok {
			t.Fatal("more than a whole window reserved")
		}
		spend, _ = b.reserve(p, 400)
		spend(10_000) // charged at most what was reserved
		if _, ok := b.reserve(p, 1); ok {
			t.Fatal("budget left after spending all of it")
		}
		time.Sleep(MirrorBudgetWindow / 2)
		if _, ok := b.reserve(p, 500); !ok {
			t.Fatal("half the budget did not come back in half the window")
		}
		if _, ok := b.reserve(p, 501); ok {
			t.Fatal("more than half the budget came back in half the window")
		}
		time.Sleep(MirrorBudgetWindow)
		if _, ok := b.reserve(p, 1000); !ok {
			t.Fatal("the budget did not refill over the window")
		}
	})
}
