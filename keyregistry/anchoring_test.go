package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/store"
)

// A node that stops at any point of anchoring a batch finishes that same
// batch at its next start: before inclusion it anchors it (same batch,
// same seq), after inclusion it only stores the proofs and acks, without
// a second transaction.
func TestAnchoringResumesThePendingBatch(t *testing.T) {
	s, _ := newTestService(t, DefaultConfig())
	q := s.anchors.(*StoreQueue)
	dn := startDevnet(t)
	anchorer, err := cardano.NewAnchorer(cardano.AnchorerConfig{Socket: dn.SocketPath(), Network: cardano.Devnet, KeyFile: dn.KeyFile()},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer anchorer.Close()
	dial := func(ctx context.Context) (chain.Reader, error) {
		return cardano.DialNodeToClient(ctx, dn.SocketPath(), dn.Magic())
	}
	// Each "run" of the node is a fresh Anchoring over the same store.
	run := func() *Anchoring {
		a, err := NewAnchoring(AnchoringConfig{BatchInterval: time.Hour, BatchMaxLinks: 100, Depth: 2}, s, q, anchorer, dial,
			nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// blocks makes a block every 50 ms until the returned stop is called.
	blocks := func() (stop func()) {
		done := make(chan struct{})
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			for {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
					dn.MakeBlock()
				}
			}
		}()
		return func() { close(done); <-finished }
	}

	c1, err := register(t, s, testKeys(t), "")
	if err != nil {
		t.Fatal(err)
	}
	// Stopped right after the batch was stored, before the anchor.
	p1, err := run().newBatch()
	if err != nil || p1 == nil || p1.Seq != 1 {
		t.Fatalf("first batch %+v, %v", p1, err)
	}
	stop := blocks()
	err = run().AnchorPending(t.Context())
	stop()
	if err != nil {
		t.Fatal(err)
	}
	link1, _ := ident.DecodeLink(c1.Links[0])
	proof1, ok, err := s.LinkProof(c1.Set.User(), link1.ID())
	if err != nil || !ok || !bytes.Equal(proof1.BatchCID, p1.CID) {
		t.Fatalf("proof of the resumed batch: %+v %v %v", proof1, ok, err)
	}
	if n, _ := q.Len(); n != 0 {
		t.Fatalf("%d queue entries left after the batch was anchored", n)
	}
	if _, err := s.db.Get(keyAnchorPending); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pending record left: %v", err)
	}

	// Stopped after the anchor was included and recorded, before the
	// proofs and the ack: the next run makes no blocks and must not need
	// any, since it does not anchor again.
	c2, err := register(t, s, testKeys(t), "")
	if err != nil {
		t.Fatal(err)
	}
	a := run()
	p2, err := a.newBatch()
	if err != nil || p2.Seq != 2 {
		t.Fatalf("second batch %+v, %v", p2, err)
	}
	c, _ := anchorproof.ParseBatchCID(p2.CID)
	raw, _ := s.Batch(c)
	b, _ := anchorproof.DecodeBatch(raw)
	stop = blocks()
	ann, err := a.publish(t.Context(), c, anchorproof.TreeOf(b), p2.Seq)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	p2.Announced = ann.Encode()
	v, _ := recEnc.Marshal(p2)
	if err := s.db.Put(keyAnchorPending, v); err != nil {
		t.Fatal(err)
	}
	tip := dn.Tip()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := run().AnchorPending(ctx); err != nil {
		t.Fatalf("resuming an included batch: %v", err)
	}
	link2, _ := ident.DecodeLink(c2.Links[0])
	proof2, ok, err := s.LinkProof(c2.Set.User(), link2.ID())
	if err != nil || !ok || !bytes.Equal(proof2.TxID, ann.TxID) {
		t.Fatalf("proof of the included batch: %+v %v %v", proof2, ok, err)
	}
	if dn.Tip().BlockNo != tip.BlockNo {
		t.Fatal("the chain moved: blocks were made")
	}
	if n, _ := q.Len(); n != 0 {
		t.Fatalf("%d queue entries left", n)
	}
}

func TestStoreQueueSignalsFull(t *testing.T) {
	_, db := newTestService(t, DefaultConfig())
	q, err := NewStoreQueue(db.Prefix("other/"))
	if err != nil {
		t.Fatal(err)
	}
	ch := q.full(2)
	c := testChain(t, testKeys(t), testKeys(t))
	l0, _ := ident.DecodeLink(c.Links[0])
	if err := q.Enqueue(c.Set.User(), l0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("signalled with one entry of two")
	default:
	}
	if err := q.Enqueue(c.Set.User(), l0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("not signalled with two entries")
	}
	if err := q.Ack(2); err != nil {
		t.Fatal(err)
	}
	if q.waiting.Load() != 0 {
		t.Fatalf("waiting %d after the ack", q.waiting.Load())
	}
}
