package devnet

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	ouroboros "github.com/blinklabs-io/gouroboros"
	gledger "github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/protocol/chainsync"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"
	"github.com/blinklabs-io/gouroboros/protocol/localtxsubmission"

	"github.com/volo-chat/volo/chain/cardano"
)

func TestHandshake(t *testing.T) {
	d := startDevnet(t, Config{NodeToNode: "127.0.0.1:0"})
	for _, tc := range []struct {
		name, network, addr string
	}{
		{"node-to-client", "unix", d.SocketPath()},
		{"node-to-node", "tcp", d.NodeToNodeAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dial(t, tc.network, tc.addr, Magic); err != nil {
				t.Fatalf("magic %d refused: %v", Magic, err)
			}
			_, err := dial(t, tc.network, tc.addr, cardano.Mainnet.Magic)
			if err == nil {
				t.Fatal("mainnet magic accepted")
			}
			t.Logf("mainnet magic refused: %v", err)
		})
	}
}

func TestQueries(t *testing.T) {
	d := startDevnet(t, Config{})
	lsq := dialNtC(t, d).LocalStateQuery().Client
	era, err := lsq.GetCurrentEra()
	if err != nil || era != gledger.EraIdConway {
		t.Fatalf("current era %d, %v; want %d", era, err, gledger.EraIdConway)
	}
	p, err := lsq.GetChainPoint()
	if err != nil || p.Slot != 0 || len(p.Hash) != 0 {
		t.Fatalf("chain point before any block %+v, %v; want origin", p, err)
	}
	if n, err := lsq.GetChainBlockNo(); err != nil || n != 0 {
		t.Fatalf("block number before any block %d, %v", n, err)
	}
	made := d.MakeBlock()
	if p, err = lsq.GetChainPoint(); err != nil || p.Slot != made.Slot || !bytes.Equal(p.Hash, made.Hash) {
		t.Fatalf("chain point %+v, %v; want %s", p, err, made)
	}
	if n, err := lsq.GetChainBlockNo(); err != nil || n != 1 {
		t.Fatalf("block number %d, %v; want 1", n, err)
	}
	start, err := lsq.GetSystemStart()
	if err != nil {
		t.Fatal(err)
	}
	if got := d.systemStart.UTC(); start.Year.Int64() != int64(got.Year()) || start.Day != int64(got.YearDay()) {
		t.Fatalf("system start %s, want %s", start, got)
	}
	if epoch, err := lsq.GetEpochNo(); err != nil || epoch != 0 {
		t.Fatalf("epoch %d, %v", epoch, err)
	}
	hist, err := lsq.GetEraHistory()
	if err != nil || len(hist) != eraCount || hist[eraCount-1].Params.EpochLength != EpochLength {
		t.Fatalf("era history %+v, %v", hist, err)
	}
	pp, err := lsq.GetCurrentProtocolParams()
	if err != nil {
		t.Fatal(err)
	}
	cp, ok := pp.(*gledger.ConwayProtocolParameters)
	if !ok || cp.MinFeeA != 44 || cp.MinFeeB != 155381 || cp.MaxTxSize != 16384 || cp.ProtocolVersion.Major != ProtocolMajor {
		t.Fatalf("protocol parameters %+v", pp)
	}
	utxos, err := lsq.GetUTxOByAddress([]common.Address{d.Address()})
	if err != nil {
		t.Fatal(err)
	}
	if len(utxos.Results) != 1 {
		t.Fatalf("%d UTxOs at the devnet's address, want 1", len(utxos.Results))
	}
	for _, out := range utxos.Results {
		if out.Amount().Uint64() != DefaultFundLovelace {
			t.Fatalf("genesis output holds %s", out.Amount())
		}
	}
}

func TestFundAddresses(t *testing.T) {
	_, a := testKey(t)
	d := startDevnet(t, Config{FundAddresses: []string{a.String(), a.String()}, FundLovelace: 5_000_000})
	utxos, err := dialNtC(t, d).LocalStateQuery().Client.GetUTxOByAddress([]common.Address{a})
	if err != nil {
		t.Fatal(err)
	}
	if len(utxos.Results) != 1 {
		t.Fatalf("%d UTxOs at a funded address, want 1", len(utxos.Results))
	}
	for _, out := range utxos.Results {
		if out.Amount().Uint64() != 5_000_000 {
			t.Fatalf("funded with %s", out.Amount())
		}
	}
	mainnetAddr, _ := common.NewAddressFromParts(common.AddressTypeKeyNone, 1, make([]byte, 28), nil)
	if _, err := New(Config{Dir: t.TempDir(), FundAddresses: []string{mainnetAddr.String()}}, nil); err == nil {
		t.Fatal("a mainnet address was funded on the devnet")
	}
}

// devnetKey is the devnet's funded key and its genesis output.
func devnetKey(t testing.TB, d *Devnet) (ed25519.PrivateKey, utxoKey) {
	t.Helper()
	k, err := cardano.ReadSigningKey(d.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	ab, _ := d.Address().Bytes()
	return k, utxoKey{tx: common.Blake2b256Hash(ab)}
}

func submit(t *testing.T, d *Devnet, raw []byte) error {
	t.Helper()
	return dialNtC(t, d).LocalTxSubmission().Client.SubmitTx(gledger.TxTypeConway, raw)
}

func TestTransactionFlow(t *testing.T) {
	d := startDevnet(t, Config{NodeToNode: "127.0.0.1:0"})
	key, genesisIn := devnetKey(t, d)
	_, payee := testKey(t)
	ntc := follow(t, d, false)
	ntn := follow(t, d, true)
	// Both start with the roll-backward to the origin a real node sends.
	for _, ch := range []<-chan seen{ntc, ntn} {
		if s := next(t, ch); !s.rollback || s.slot != 0 || len(s.hash) != 0 {
			t.Fatalf("first message %+v, want a roll-backward to the origin", s)
		}
	}
	spec := txSpec{
		inputs:  []utxoKey{genesisIn},
		outputs: []txOut{{payee, 10_000_000}},
		ttl:     1000000,
		meta:    map[string]any{"root": bytes.Repeat([]byte{7}, 32), "v": 1},
		signers: []ed25519.PrivateKey{key},
	}
	// The change is what is left after the minimum fee.
	raw, _ := spec.build(t)
	tx, _ := decodeTx(raw)
	fee := tx.tx.Fee().Uint64()
	spec.outputs = append(spec.outputs, txOut{d.Address(), DefaultFundLovelace - 10_000_000 - fee})
	spec.fee = fee + 2000 // room for the change output's bytes
	spec.outputs[1].lovelace -= 2000
	raw, id := spec.build(t)
	if err := submit(t, d, raw); err != nil {
		t.Fatalf("valid transaction refused: %v", err)
	}
	lsq := dialNtC(t, d).LocalStateQuery().Client
	utxos, err := lsq.GetUTxOByAddress([]common.Address{payee})
	if err != nil || len(utxos.Results) != 1 {
		t.Fatalf("payee UTxOs %v, %v", utxos, err)
	}
	for in, out := range utxos.Results {
		if in.Hash != id || in.Idx != 0 || out.Amount().Uint64() != 10_000_000 {
			t.Fatalf("payee UTxO %x#%d %s", in.Hash, in.Idx, out.Amount())
		}
	}
	made := d.MakeBlock()
	got := next(t, ntc)
	if got.rollback || !bytes.Equal(got.hash, made.Hash) || got.slot != made.Slot {
		t.Fatalf("node-to-client follower saw %+v, want block %s", got, made)
	}
	blk, err := gledger.NewBlockFromCbor(gledger.BlockTypeConway, got.raw)
	if err != nil {
		t.Fatal(err)
	}
	txs := blk.Transactions()
	if blk.BlockNumber() != 1 || len(txs) != 1 || txs[0].Hash() != id {
		t.Fatalf("block %d with %d transactions", blk.BlockNumber(), len(txs))
	}
	if txs[0].Metadata() == nil || txs[0].AuxDataHash() == nil ||
		*txs[0].AuxDataHash() != common.Blake2b256Hash(txs[0].AuxiliaryData().Cbor()) {
		t.Fatal("auxiliary data did not survive byte for byte")
	}
	if err := common.ValidateVKeyWitnesses(txs[0]); err != nil {
		t.Fatalf("witness in the block: %v", err)
	}
	if h := next(t, ntn); h.rollback || !bytes.Equal(h.hash, made.Hash) {
		t.Fatalf("node-to-node follower saw %+v, want header of %s", h, made)
	}
	// The same bytes over node-to-node BlockFetch.
	bf, err := dial(t, "tcp", d.NodeToNodeAddr(), Magic)
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := bf.BlockFetch().Client.GetBlock(pcommon.NewPoint(made.Slot, made.Hash))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fetched.Cbor(), got.raw) {
		t.Fatal("BlockFetch and ChainSync served different bytes")
	}
	// The spent genesis output is gone; the change is there.
	utxos, err = dialNtC(t, d).LocalStateQuery().Client.GetUTxOByAddress([]common.Address{d.Address()})
	if err != nil || len(utxos.Results) != 1 {
		t.Fatalf("devnet UTxOs %v, %v", utxos, err)
	}
	for in := range utxos.Results {
		if in.Hash != id || in.Idx != 1 {
			t.Fatalf("devnet UTxO %x#%d, want the change %x#1", in.Hash, in.Idx, id)
		}
	}
	// An empty block follows at once (the follower is waiting).
	empty := d.MakeBlock()
	if s := next(t, ntc); !bytes.Equal(s.hash, empty.Hash) {
		t.Fatal("follower missed the empty block")
	}
}

func TestRefusals(t *testing.T) {
	d := startDevnet(t, Config{})
	key, genesisIn := devnetKey(t, d)
	other, payee := testKey(t)
	good := payFromGenesis(d, key, genesisIn, payee)
	good.ttl = 1_000_000
	d.MakeBlock()
	d.MakeBlock()
	for _, tc := range []struct {
		name   string
		change func(*txSpec)
		reason string
	}{
		{"fee too low", func(s *txSpec) { s.fee = 1000; s.outputs[1].lovelace += 199_000 }, "FeeTooSmall"},
		{"value not conserved", func(s *txSpec) { s.outputs[1].lovelace++ }, "ValueNotConserved"},
		{"bad signature", func(s *txSpec) { s.badSig = true }, "Signatures"},
		{"missing signature", func(s *txSpec) { s.signers = []ed25519.PrivateKey{other} }, "Signatures"},
		{"metadata string over 64 bytes", func(s *txSpec) { s.meta = strings.Repeat("x", 65) }, "64 byte"},
		{"expired", func(s *txSpec) { s.ttl = 1 }, "OutsideValidityInterval"},
		{"unknown input", func(s *txSpec) { s.inputs = []utxoKey{{tx: [32]byte{1}}} }, "BadInputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.outputs = append([]txOut(nil), good.outputs...)
			tc.change(&s)
			raw, _ := s.build(t)
			err := submit(t, d, raw)
			var rej localtxsubmission.TransactionRejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("submit: %v, want a rejection", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("rejection %q does not say %q", err, tc.reason)
			}
			if len(d.mempool) != 0 || len(d.ledger.utxo) != 1 {
				t.Fatal("a refused transaction changed the ledger")
			}
		})
	}
	// Positive control: the unchanged transaction is accepted, then the
	// same input cannot be spent again.
	raw, _ := good.build(t)
	if err := submit(t, d, raw); err != nil {
		t.Fatalf("valid transaction refused: %v", err)
	}
	again := good
	again.outputs = []txOut{{payee, 6_000_000}, {d.Address(), DefaultFundLovelace - 6_000_000 - 200_000}}
	raw, _ = again.build(t)
	if err := submit(t, d, raw); err == nil || !strings.Contains(err.Error(), "BadInputs") {
		t.Fatalf("double spend: %v", err)
	}
	d.MakeBlock()
	if err := submit(t, d, raw); err == nil || !strings.Contains(err.Error(), "BadInputs") {
		t.Fatalf("spend of an input spent in a block: %v", err)
	}
	if err := submit(t, d, []byte("not a transaction")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestRollback(t *testing.T) {
	d := startDevnet(t, Config{})
	key, genesisIn := devnetKey(t, d)
	_, payee := testKey(t)
	ntc := follow(t, d, false)
	next(t, ntc) // roll-backward to the origin
	b1 := d.MakeBlock()
	next(t, ntc)
	spec := payFromGenesis(d, key, genesisIn, payee)
	raw, _ := spec.build(t)
	if err := submit(t, d, raw); err != nil {
		t.Fatal(err)
	}
	b2 := d.MakeBlock()
	if s := next(t, ntc); !bytes.Equal(s.hash, b2.Hash) {
		t.Fatal("follower missed block 2")
	}
	if err := d.Rollback(3); !errors.Is(err, ErrRollback) {
		t.Fatalf("rollback past the origin: %v", err)
	}
	if err := d.Rollback(1); err != nil {
		t.Fatal(err)
	}
	s := next(t, ntc)
	if !s.rollback || s.slot != b1.Slot || !bytes.Equal(s.hash, b1.Hash) {
		t.Fatalf("follower saw %+v, want a roll-backward to %s", s, b1)
	}
	if tip := d.Tip(); !bytes.Equal(tip.Point.Hash, b1.Hash) || tip.BlockNo != 1 {
		t.Fatalf("tip %+v after rollback", tip)
	}
	lsq := dialNtC(t, d).LocalStateQuery().Client
	utxos, err := lsq.GetUTxOByAddress([]common.Address{payee})
	if err != nil || len(utxos.Results) != 0 {
		t.Fatalf("payee still has %v, %v", utxos, err)
	}
	// The transaction is discarded, not back in the mempool; its input is
	// spendable again.
	b3 := d.MakeBlock()
	if s := next(t, ntc); !bytes.Equal(s.hash, b3.Hash) {
		t.Fatal("follower missed the block after the rollback")
	}
	blk, err := gledger.NewBlockFromCbor(gledger.BlockTypeConway, d.blocks[1].raw)
	if err != nil || len(blk.Transactions()) != 0 || blk.BlockNumber() != 2 || blk.PrevHash().String() != common.NewBlake2b256(b1.Hash).String() {
		t.Fatalf("block after the rollback: %v", err)
	}
	if err := submit(t, d, raw); err != nil {
		t.Fatalf("resubmit after rollback: %v", err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	d, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, genesisIn := devnetKey(t, d)
	_, payee := testKey(t)
	spec := payFromGenesis(d, key, genesisIn, payee)
	raw, id := spec.build(t)
	if _, err := d.submit(gledger.TxTypeConway, raw); err != nil {
		t.Fatal(err)
	}
	d.MakeBlock()
	d.MakeBlock()
	d.MakeBlock()
	if err := d.Rollback(1); err != nil {
		t.Fatal(err)
	}
	tip := d.Tip()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	d2, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	if got := d2.Tip(); got.BlockNo != tip.BlockNo || !bytes.Equal(got.Point.Hash, tip.Point.Hash) {
		t.Fatalf("tip after restart %+v, want %+v", got, tip)
	}
	if !d2.systemStart.Equal(d.systemStart) || !bytes.Equal(d2.key, d.key) {
		t.Fatal("restart changed the genesis")
	}
	if _, ok := d2.ledger.utxo[utxoKey{tx: id}]; !ok {
		t.Fatal("the replayed chain lost a transaction's output")
	}
	if _, ok := d2.ledger.utxo[genesisIn]; ok {
		t.Fatal("the replayed chain did not spend the genesis output")
	}
	if _, err := New(Config{Dir: dir, FundLovelace: 7}, nil); err == nil {
		t.Fatal("a chain was replayed over another genesis")
	}
}

func TestIntersect(t *testing.T) {
	d := startDevnet(t, Config{})
	b1, b2 := d.MakeBlock(), d.MakeBlock()
	ch := make(chan seen, 10)
	cfg := chainsync.NewConfig(
		chainsync.WithRollForwardRawFunc(func(_ chainsync.CallbackContext, _ uint, raw []byte, _ chainsync.Tip) error {
			b, err := gledger.NewBlockFromCbor(gledger.BlockTypeConway, raw)
			if err != nil {
				return err
			}
			ch <- seen{slot: b.SlotNumber(), hash: b.Hash().Bytes()}
			return nil
		}),
		chainsync.WithRollBackwardFunc(func(_ chainsync.CallbackContext, p pcommon.Point, _ chainsync.Tip) error {
			ch <- seen{rollback: true, slot: p.Slot, hash: p.Hash}
			return nil
		}),
	)
	cs := dialNtC(t, d, ouroboros.WithChainSyncConfig(cfg)).ChainSync().Client
	tip, err := cs.GetCurrentTip()
	if err != nil || tip.BlockNumber != 2 || !bytes.Equal(tip.Point.Hash, b2.Hash) {
		t.Fatalf("current tip %+v, %v; want block 2", tip, err)
	}
	unknown := pcommon.NewPoint(b1.Slot, make([]byte, 32))
	if err := cs.Sync([]pcommon.Point{unknown}); err == nil {
		t.Fatal("intersection found at a point not on the chain")
	}
	if err := cs.Sync([]pcommon.Point{unknown, pcommon.NewPoint(b1.Slot, b1.Hash)}); err != nil {
		t.Fatal(err)
	}
	if s := next(t, ch); !s.rollback || !bytes.Equal(s.hash, b1.Hash) {
		t.Fatalf("first message %+v, want a roll-backward to the intersection", s)
	}
	if s := next(t, ch); s.rollback || !bytes.Equal(s.hash, b2.Hash) {
		t.Fatalf("second message %+v, want block 2", s)
	}
}
