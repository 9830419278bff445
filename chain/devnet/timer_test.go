package devnet

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	gledger "github.com/blinklabs-io/gouroboros/ledger"
)

// TestBlockTimer runs the block maker in a bubble: one block per interval,
// each in the slot its time falls in. The gouroboros connections use real
// sockets, which a bubble cannot hold, so the timer is tested on its own.
func TestBlockTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := New(Config{Dir: t.TempDir(), BlockInterval: 2 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.runBlocks(ctx)
		}()
		time.Sleep(7 * time.Second)
		synctest.Wait()
		tip := d.Tip()
		if tip.BlockNo != 3 {
			t.Fatalf("%d blocks after 7 s at one per 2 s, want 3", tip.BlockNo)
		}
		start := d.slotAt(d.now()) - 7
		for i, b := range d.blocks {
			if want := start + uint64(2*(i+1)); b.slot != want {
				t.Fatalf("block %d in slot %d, want %d", b.number, b.slot, want)
			}
		}
		cancel()
		<-done
		time.Sleep(10 * time.Second)
		if d.Tip().BlockNo != 3 {
			t.Fatal("blocks made after the timer stopped")
		}
	})
}

// TestIdleDevnetPauses: after IdleBlocks empty blocks the timer stops
// making blocks; a transaction wakes it, and its block is followed by
// IdleBlocks empty blocks again (enough for the confirmation depth).
func TestIdleDevnetPauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := New(Config{Dir: t.TempDir(), BlockInterval: time.Second, IdleBlocks: 3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go d.runBlocks(ctx)
		time.Sleep(30*time.Second + time.Millisecond)
		synctest.Wait()
		if n := d.Tip().BlockNo; n != 3 {
			t.Fatalf("%d blocks after 30 idle seconds, want 3 (IdleBlocks)", n)
		}
		key, genesisIn := devnetKey(t, d)
		_, payee := testKey(t)
		spec := payFromGenesis(d, key, genesisIn, payee)
		raw, _ := spec.build(t)
		if _, err := d.submit(gledger.TxTypeConway, raw); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := d.Tip().BlockNo; n != 3+1+3 {
			t.Fatalf("%d blocks after a transaction woke the devnet, want 7 (its block and 3 empty ones)", n)
		}
		if len(d.blocks[3].txs) != 1 {
			t.Fatal("the transaction is not in the block the timer made after it")
		}
	})
}

// TestSlotsIncrease: blocks made faster than one a slot still get
// increasing slots.
func TestSlotsIncrease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := New(Config{Dir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		a, b := d.MakeBlock(), d.MakeBlock()
		if b.Slot != a.Slot+1 {
			t.Fatalf("slots %d then %d", a.Slot, b.Slot)
		}
		time.Sleep(10 * time.Second)
		if c := d.MakeBlock(); c.Slot != a.Slot+10 {
			t.Fatalf("slot %d 10 s after slot %d", c.Slot, a.Slot)
		}
	})
}

// FuzzSubmit feeds arbitrary bytes to the transaction submission path:
// they are refused with a reason, never accepted, and never panic.
func FuzzSubmit(f *testing.F) {
	d, err := New(Config{Dir: f.TempDir()}, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer d.Stop()
	key, genesisIn := devnetKey(f, d)
	_, payee := testKey(f)
	good := payFromGenesis(d, key, genesisIn, payee)
	good.meta = map[string]any{"v": 1, "root": make([]byte, 32)}
	raw, _ := good.build(f)
	f.Add(raw)
	unsigned := good
	unsigned.signers = nil
	raw, _ = unsigned.build(f)
	f.Add(raw)
	f.Add([]byte{0x84, 0xa0, 0xa0, 0xf5, 0xf6})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Validate only: the fuzzer must not fill the mempool.
		tx, err := decodeTx(b)
		if err == nil {
			d.mu.Lock()
			err = d.ledger.validate(tx, d.nextSlotLocked())
			d.mu.Unlock()
		}
		if err == nil {
			if _, id := good.build(t); tx.id != id {
				t.Fatalf("accepted a transaction other than the seed: %x", b)
			}
			return
		}
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("refusal %v does not wrap ErrRefused", err)
		}
	})
}
