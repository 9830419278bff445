package cardano

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/chain"
)

func mainnetBlock(t testing.TB) []byte {
	t.Helper()
	h, err := os.ReadFile("testdata/conway_block.hex")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestDecodeMainnetBlock reads a real Cardano mainnet block with the
// function both readers use.
func TestDecodeMainnetBlock(t *testing.T) {
	raw := mainnetBlock(t)
	b, err := DecodeBlock(ledger.BlockTypeConway, raw)
	if err != nil {
		t.Fatal(err)
	}
	wantHash, _ := hex.DecodeString("27807a70215e3e018eec9be8c619c692e06a78ebcb63daf90d7abe823f3bbf47")
	if b.Point.Slot != 159835207 || !bytes.Equal(b.Point.Hash, wantHash) || b.BlockNo != 12069665 {
		t.Fatalf("block %s no %d, want 159835207.%x no 12069665", b.Point, b.BlockNo, wantHash)
	}
	if len(b.Txs) != 8 {
		t.Fatalf("%d transactions, want 8", len(b.Txs))
	}
	if got := b.Txs[4].ID.String(); got != "a0aeaf016f56434bca3293f6bb0cfc1a3f54b13509b892a325d0fa2acc4c8843" {
		t.Fatalf("transaction 4 has ID %s", got)
	}

	// Against what gouroboros computes.
	g, err := ledger.NewBlockFromCbor(ledger.BlockTypeConway, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.Hash().Bytes(), b.Point.Hash) {
		t.Fatal("block hash differs from gouroboros's")
	}
	withAux := 0
	for i, tx := range g.Transactions() {
		if chain.TxID(tx.Hash()) != b.Txs[i].ID {
			t.Errorf("tx %d: ID %s, gouroboros %x", i, b.Txs[i].ID, tx.Hash())
		}
		if len(b.Txs[i].Signers) != len(tx.Witnesses().Vkey()) {
			t.Errorf("tx %d: %d verified signers of %d vkey witnesses", i, len(b.Txs[i].Signers), len(tx.Witnesses().Vkey()))
		}
		if b.Txs[i].Anchor != nil {
			t.Errorf("tx %d: a Volo anchor in a mainnet block", i)
		}
		if h := tx.AuxDataHash(); h != nil {
			withAux++
			if common.Blake2b256Hash(tx.AuxiliaryData().Cbor()) != *h {
				t.Errorf("tx %d: auxiliary data hash does not match", i)
			}
		}
	}
	if withAux != 3 {
		t.Fatalf("%d transactions with auxiliary data, want 3", withAux)
	}
}

func TestDecodeBlockRefuses(t *testing.T) {
	raw := mainnetBlock(t)
	// A changed transaction byte breaks the body hash in the header.
	bad := bytes.Clone(raw)
	bad[len(bad)-200] ^= 1
	if _, err := DecodeBlock(ledger.BlockTypeConway, bad); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("tampered block: got %v, want ErrBadBlock", err)
	}
	if _, err := DecodeBlock(ledger.BlockTypeConway, raw[:len(raw)-1]); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("truncated block: got %v, want ErrBadBlock", err)
	}
	if _, err := DecodeBlock(ledger.BlockTypeByronMain, raw); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("Byron: got %v, want ErrBadBlock", err)
	}
	if _, err := DecodeBlock(ledger.BlockTypeConway, raw); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func TestAnchorFromAuxData(t *testing.T) {
	tx, _ := buildTest(t, batchAnchor(), testInput())
	aux := tx.Tx.AuxiliaryData().Cbor()
	hash := tx.Tx.AuxDataHash()
	a := anchorFromAuxData(hash, aux)
	if a == nil || a.Root != tx.Anchor.Root || a.Prev != tx.Anchor.Prev {
		t.Fatalf("anchor %+v, want %+v", a, tx.Anchor)
	}
	other := common.Blake2b256Hash([]byte("other"))
	if anchorFromAuxData(&other, aux) != nil {
		t.Fatal("anchor read from auxiliary data the body does not commit to")
	}
	if anchorFromAuxData(nil, aux) != nil {
		t.Fatal("anchor read from a body without an auxiliary data hash")
	}
	// The Allegra/Mary and Alonzo forms carry the same metadata map.
	var md cbor.RawMessage = aux
	mary, _ := cbor.Marshal([]any{md, []any{}})
	alonzo, _ := cbor.Marshal(cbor.Tag{Number: auxDataTag, Content: map[uint64]any{0: md}})
	for name, form := range map[string][]byte{"mary": mary, "alonzo": alonzo} {
		h := common.Blake2b256Hash(form)
		if got := anchorFromAuxData(&h, form); got == nil || got.Root != tx.Anchor.Root {
			t.Errorf("%s form: anchor %v", name, got)
		}
	}
	// Another label only: no anchor.
	otherLabel, _ := cbor.Marshal(map[uint64]any{674: "hello"})
	h := common.Blake2b256Hash(otherLabel)
	if anchorFromAuxData(&h, otherLabel) != nil {
		t.Fatal("anchor read from another label")
	}
}

func FuzzDecodeBlock(f *testing.F) {
	f.Add(uint(ledger.BlockTypeConway), mainnetBlock(f))
	if raw, err := os.ReadFile("testdata/devnet_block.cbor"); err == nil {
		f.Add(uint(ledger.BlockTypeConway), raw)
	}
	f.Fuzz(func(t *testing.T, blockType uint, raw []byte) {
		b, err := DecodeBlock(blockType, raw)
		if err != nil {
			if !errors.Is(err, ErrBadBlock) {
				t.Fatalf("error %v does not wrap ErrBadBlock", err)
			}
			return
		}
		if len(b.Point.Hash) != 32 {
			t.Fatalf("block hash of %d bytes", len(b.Point.Hash))
		}
	})
}
