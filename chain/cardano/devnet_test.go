package cardano_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/chain/devnet"
)

// testTimeout bounds each integration test; nothing here waits on time
// except as a guard against a hang.
const testTimeout = 60 * time.Second

// logWatch is a slog handler that lets a test wait for the Anchorer's
// log messages (which say what it did: submitted, included, resubmitted).
type logWatch struct {
	mu   sync.Mutex
	recs []slog.Record
	ch   chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{ch: make(chan struct{}, 1)} }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }
func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	w.recs = append(w.recs, r.Clone())
	w.mu.Unlock()
	select {
	case w.ch <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the number of records with message msg once there are n.
func (w *logWatch) wait(t *testing.T, ctx context.Context, msg string, n int) {
	t.Helper()
	for {
		w.mu.Lock()
		count := 0
		for _, r := range w.recs {
			if r.Message == msg {
				count++
			}
		}
		w.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			t.Fatalf("no %d× log %q: %v", n, msg, ctx.Err())
		}
	}
}

type testNet struct {
	d    *devnet.Devnet
	dir  string
	anc  *cardano.Anchorer
	logs *logWatch
}

func startDevnet(t *testing.T, ctx context.Context) *testNet {
	t.Helper()
	// A short directory: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "cdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d, err := devnet.New(devnet.Config{Dir: filepath.Join(dir, "d"), NodeToNode: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	logs := newLogWatch()
	anc, err := cardano.NewAnchorer(cardano.AnchorerConfig{
		Socket:    d.SocketPath(),
		Network:   cardano.Devnet,
		KeyFile:   d.KeyFile(),
		StateFile: filepath.Join(dir, "anchor-state.json"),
	}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anc.Close() })
	return &testNet{d: d, dir: dir, anc: anc, logs: logs}
}

func testAnchor(seq uint64) chain.Anchor {
	a := chain.Anchor{
		Version:  chain.AnchorVersion,
		TreeSize: 3,
		Seq:      seq,
		BatchCID: append([]byte{0x01, 0x55, 0x12, 0x20}, bytes.Repeat([]byte{byte(seq)}, 32)...),
		Node:     append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, bytes.Repeat([]byte{0xcd}, 32)...),
	}
	a.Root[0] = byte(seq)
	return a
}

type anchorResult struct {
	inc chain.Inclusion
	err error
}

func anchorAsync(ctx context.Context, anc *cardano.Anchorer, a chain.Anchor, depth uint64) <-chan anchorResult {
	ch := make(chan anchorResult, 1)
	go func() {
		inc, err := anc.Anchor(ctx, a, depth)
		ch <- anchorResult{inc, err}
	}()
	return ch
}

// anchor publishes a and makes blocks after its submission until it is
// depth deep. The submitted-log count before is n-1.
func (n *testNet) anchor(t *testing.T, ctx context.Context, a chain.Anchor, depth uint64, nth int) chain.Inclusion {
	t.Helper()
	res := anchorAsync(ctx, n.anc, a, depth)
	n.logs.wait(t, ctx, "anchor submitted", nth)
	for range depth {
		n.d.MakeBlock()
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.inc
}

func sameAnchor(a, b chain.Anchor) bool {
	return a.Version == b.Version && a.Root == b.Root && a.TreeSize == b.TreeSize && a.Seq == b.Seq &&
		a.Prev == b.Prev && bytes.Equal(a.BatchCID, b.BatchCID) && bytes.Equal(a.Node, b.Node)
}

func payKey(t *testing.T, n *testNet) ed25519.PublicKey {
	t.Helper()
	k, err := cardano.ReadSigningKey(n.d.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().(ed25519.PublicKey)
}

// checkBlock reads the inclusion's block with r and finds the anchor in
// it, signed by the payment key.
func checkBlock(t *testing.T, ctx context.Context, r chain.Reader, inc chain.Inclusion, pub ed25519.PublicKey) *chain.Block {
	t.Helper()
	b, err := r.Block(ctx, inc.Block, inc.Prev)
	if err != nil {
		t.Fatal(err)
	}
	if b.BlockNo != inc.BlockNo || !bytes.Equal(b.Point.Hash, inc.Block.Hash) {
		t.Fatalf("block %s no %d, want %s no %d", b.Point, b.BlockNo, inc.Block, inc.BlockNo)
	}
	for _, tx := range b.Txs {
		if tx.ID != inc.TxID {
			continue
		}
		if tx.Anchor == nil || !sameAnchor(*tx.Anchor, inc.Anchor) {
			t.Fatalf("anchor in the block %+v, want %+v", tx.Anchor, inc.Anchor)
		}
		if len(tx.Signers) != 1 || !bytes.Equal(tx.Signers[0], pub) {
			t.Fatalf("signers %x, want the payment key %x", tx.Signers, pub)
		}
		return b
	}
	t.Fatalf("transaction %s not in block %s", inc.TxID, inc.Block)
	return nil
}

func TestDevnetAnchorAndRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	n := startDevnet(t, ctx)
	n.d.MakeBlock() // a chain that does not start at the origin

	a1 := testAnchor(1)
	inc1 := n.anchor(t, ctx, a1, 3, 1)
	if tip := n.d.Tip(); chain.Depth(inc1.BlockNo, tip) < 3 {
		t.Fatalf("returned at depth %d, want 3", chain.Depth(inc1.BlockNo, tip))
	}
	if inc1.Anchor.Prev.IsZero() || inc1.Anchor.Root != a1.Root {
		t.Fatalf("inclusion anchor %+v", inc1.Anchor)
	}

	// The second anchor spends the first one's change.
	inc2 := n.anchor(t, ctx, testAnchor(2), 3, 2)
	if inc2.Anchor.Prev != inc1.TxID {
		t.Fatalf("second anchor's Prev %s, want the first anchor %s", inc2.Anchor.Prev, inc1.TxID)
	}
	if inc2.BlockNo <= inc1.BlockNo {
		t.Fatalf("second anchor in block %d, first in %d", inc2.BlockNo, inc1.BlockNo)
	}

	pub := payKey(t, n)
	n2c, err := cardano.DialNodeToClient(ctx, n.d.SocketPath(), n.d.Magic())
	if err != nil {
		t.Fatal(err)
	}
	defer n2c.Close()
	n2n, err := cardano.DialNodeToNode(ctx, n.d.NodeToNodeAddr(), n.d.Magic())
	if err != nil {
		t.Fatal(err)
	}
	defer n2n.Close()
	for _, inc := range []chain.Inclusion{inc1, inc2} {
		b1 := checkBlock(t, ctx, n2c, inc, pub)
		b2 := checkBlock(t, ctx, n2n, inc, pub)
		if len(b1.Txs) != len(b2.Txs) || b1.Point.String() != b2.Point.String() {
			t.Fatal("the two readers return different blocks")
		}
	}
	for name, r := range map[string]chain.Reader{"node-to-client": n2c, "node-to-node": n2n} {
		tip, err := r.Tip(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := n.d.Tip(); tip.BlockNo != want.BlockNo || tip.Point.String() != want.Point.String() {
			t.Fatalf("%s: tip %+v, want %+v", name, tip, want)
		}
		// A point that is not on the chain.
		bad := inc1.Block
		bad.Hash = bytes.Repeat([]byte{0xee}, 32)
		if _, err := r.Block(ctx, bad, inc1.Prev); !errors.Is(err, chain.ErrNotFound) {
			t.Fatalf("%s: unknown block: got %v, want ErrNotFound", name, err)
		}
	}
}

func TestDevnetRollbackResubmits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	n := startDevnet(t, ctx)

	res := anchorAsync(ctx, n.anc, testAnchor(1), 3)
	n.logs.wait(t, ctx, "anchor submitted", 1)
	first := n.d.MakeBlock()
	n.logs.wait(t, ctx, "anchor included", 1)
	if err := n.d.Rollback(1); err != nil {
		t.Fatal(err)
	}
	n.logs.wait(t, ctx, "anchor resubmitted", 1)
	for range 3 {
		n.d.MakeBlock()
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	// Included, rolled back, included again. (The new block may equal
	// the dropped one: same parent, slot and transaction.)
	n.logs.wait(t, ctx, "anchor included", 2)
	if r.inc.Block.Slot < first.Slot {
		t.Fatalf("inclusion in slot %d, before the rolled-back block's %d", r.inc.Block.Slot, first.Slot)
	}
	// The block it names is on the chain and holds the transaction.
	rd, err := cardano.DialNodeToClient(ctx, n.d.SocketPath(), n.d.Magic())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	checkBlock(t, ctx, rd, r.inc, payKey(t, n))
	if tip := n.d.Tip(); chain.Depth(r.inc.BlockNo, tip) < 3 {
		t.Fatalf("returned at depth %d, want 3", chain.Depth(r.inc.BlockNo, tip))
	}
}

func TestDevnetFollowSeesRollback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	n := startDevnet(t, ctx)
	p1 := n.d.MakeBlock()
	n.d.MakeBlock()
	for _, dialFn := range []func() (chain.Reader, error){
		func() (chain.Reader, error) { return cardano.DialNodeToClient(ctx, n.d.SocketPath(), n.d.Magic()) },
		func() (chain.Reader, error) { return cardano.DialNodeToNode(ctx, n.d.NodeToNodeAddr(), n.d.Magic()) },
	} {
		r, err := dialFn()
		if err != nil {
			t.Fatal(err)
		}
		var events []chain.Event
		stop := errors.New("stop")
		err = r.Follow(ctx, nil, func(ev chain.Event) error {
			events = append(events, ev)
			if len(events) == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Fatal(err)
		}
		if events[0].Rollback || events[0].Point.String() != p1.String() || events[0].BlockNo != 1 || events[1].BlockNo != 2 {
			t.Fatalf("events %+v", events)
		}
		r.Close()
	}
	// Following from block 1: block 2 arrives, then its rollback.
	r, err := cardano.DialNodeToClient(ctx, n.d.SocketPath(), n.d.Magic())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan chain.Event, 2)
	go r.Follow(ctx, []chain.Point{p1}, func(ev chain.Event) error {
		got <- ev
		if ev.Rollback {
			return errors.New("stop")
		}
		return nil
	})
	if ev := <-got; ev.Rollback || ev.BlockNo != 2 {
		t.Fatalf("event %+v, want block 2", ev)
	}
	if err := n.d.Rollback(1); err != nil {
		t.Fatal(err)
	}
	ev := <-got
	if !ev.Rollback || ev.Point.String() != p1.String() {
		t.Fatalf("event %+v, want a rollback to %s", ev, p1)
	}
}

func TestDevnetRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	n := startDevnet(t, ctx)

	// Metadata that is not what the body commits to: the node refuses
	// and its reason reaches the caller.
	err := n.anc.SubmitTampered(ctx, testAnchor(1))
	if !errors.Is(err, cardano.ErrRejected) {
		t.Fatalf("tampered metadata: got %v, want ErrRejected", err)
	}
	if !strings.Contains(err.Error(), "etadata") {
		t.Fatalf("reason %q does not name the metadata", err)
	}
	t.Logf("refusal: %v", err)

	// A key with no funds.
	k, _ := cardano.GenerateSigningKey()
	keyFile := filepath.Join(n.dir, "poor.skey")
	if err := cardano.WriteSigningKey(keyFile, k); err != nil {
		t.Fatal(err)
	}
	poor, err := cardano.NewAnchorer(cardano.AnchorerConfig{Socket: n.d.SocketPath(), Network: cardano.Devnet, KeyFile: keyFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer poor.Close()
	if _, err := poor.Anchor(ctx, testAnchor(1), 1); !errors.Is(err, cardano.ErrInsufficientFunds) {
		t.Fatalf("no funds: got %v, want ErrInsufficientFunds", err)
	}

	// Positive control: the untampered anchor goes through.
	n.anchor(t, ctx, testAnchor(1), 1, 1)
}

// TestAnchorerWaitsForNode starts the Anchorer before the node.
func TestAnchorerWaitsForNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "cdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d, err := devnet.New(devnet.Config{Dir: filepath.Join(dir, "d")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogWatch()
	anc, err := cardano.NewAnchorer(cardano.AnchorerConfig{
		Socket: d.SocketPath(), Network: cardano.Devnet, KeyFile: d.KeyFile(), Poll: 10 * time.Millisecond,
	}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	res := anchorAsync(ctx, anc, testAnchor(1), 1)
	logs.wait(t, ctx, "cardano node not reachable, retrying", 1)
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	logs.wait(t, ctx, "anchor submitted", 1)
	d.MakeBlock()
	if r := <-res; r.err != nil {
		t.Fatal(r.err)
	}
}
