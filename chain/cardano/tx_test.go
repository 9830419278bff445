package cardano

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/big"
	"testing"

	gcbor "github.com/blinklabs-io/gouroboros/cbor"
	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/babbage"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	"github.com/blinklabs-io/gouroboros/ledger/mary"
	"github.com/blinklabs-io/gouroboros/ledger/shelley"
	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/chain"
)

// mainnetParams are the Conway protocol parameters of Cardano mainnet
// that matter to an anchor transaction.
func mainnetParams() *conway.ConwayProtocolParameters {
	return &conway.ConwayProtocolParameters{
		MinFeeA:        44,
		MinFeeB:        155381,
		MaxTxSize:      16384,
		MaxValueSize:   5000,
		AdaPerUtxoByte: 4310,
		ExecutionCosts: common.ExUnitPrice{
			MemPrice:  &gcbor.Rat{Rat: big.NewRat(577, 10000)},
			StepPrice: &gcbor.Rat{Rat: big.NewRat(721, 10000000)},
		},
		MinFeeRefScriptCostPerByte: &gcbor.Rat{Rat: big.NewRat(15, 1)},
		ProtocolVersion:            common.ProtocolParametersProtocolVersion{Major: 10},
	}
}

func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x11}, 32))
}

// batchAnchor is a batch anchor as keyregistry publishes it: a 32-byte
// root, a 36-byte CID and a 38-byte peer ID.
func batchAnchor() chain.Anchor {
	a := chain.Anchor{
		Version:  chain.AnchorVersion,
		TreeSize: 500,
		Seq:      12,
		BatchCID: append([]byte{0x01, 0x55, 0x12, 0x20}, bytes.Repeat([]byte{0xab}, 32)...),
		Node:     append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, bytes.Repeat([]byte{0xcd}, 32)...),
	}
	for i := range a.Root {
		a.Root[i] = byte(i * 7)
	}
	return a
}

func testInput() utxo {
	var id chain.TxID
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	return utxo{TxID: id, Index: 1, Lovelace: 25_000_000_000}
}

// testLedger is the ledger state the fee rule reads: the spent output.
// Other queries are not used by the rules these tests run.
type testLedger struct {
	common.LedgerState
	utxos map[string]common.Utxo
}

func (l testLedger) UtxoById(in common.TransactionInput) (common.Utxo, error) {
	u, ok := l.utxos[in.String()]
	if !ok {
		return common.Utxo{}, errors.New("no such utxo")
	}
	return u, nil
}

func ledgerWith(t *testing.T, in utxo, addr common.Address) testLedger {
	t.Helper()
	txIn := shelley.ShelleyTransactionInput{TxId: common.Blake2b256(in.TxID), OutputIndex: in.Index}
	out := babbage.BabbageTransactionOutput{
		OutputAddress: addr,
		OutputAmount:  mary.MaryTransactionOutputValue{Amount: in.Lovelace},
	}
	return testLedger{utxos: map[string]common.Utxo{txIn.String(): {Id: txIn, Output: &out}}}
}

func buildTest(t testing.TB, a chain.Anchor, in utxo) (*anchorTx, common.Address) {
	t.Helper()
	key := testKey()
	addr, err := EnterpriseAddress(key.Public().(ed25519.PublicKey), Mainnet)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := buildAnchorTx(a, in, key, addr, mainnetParams(), 150_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return tx, addr
}

func TestAnchorTxDecodesToSameMetadata(t *testing.T) {
	a := batchAnchor()
	in := testInput()
	tx, addr := buildTest(t, a, in)

	decoded, err := ledger.NewTransactionFromCbor(ledger.TxTypeConway, tx.CBOR)
	if err != nil {
		t.Fatal(err)
	}
	if chain.TxID(decoded.Hash()) != tx.ID {
		t.Fatalf("gouroboros computes ID %x, the builder %s", decoded.Hash(), tx.ID)
	}
	md, ok := decoded.Metadata().(common.MetaMap)
	if !ok {
		t.Fatalf("metadata is %T, want a map", decoded.Metadata())
	}
	if len(md.Pairs) != 1 {
		t.Fatalf("%d metadata labels, want 1", len(md.Pairs))
	}
	label, ok := md.Pairs[0].Key.(common.MetaInt)
	if !ok || label.Value.Cmp(big.NewInt(chain.MetadataLabel)) != 0 {
		t.Fatalf("metadata label %v, want %d", md.Pairs[0].Key, chain.MetadataLabel)
	}
	// The value under the label, re-read from the transaction's own
	// auxiliary data bytes.
	var aux map[uint64]cbor.RawMessage
	if err := cbor.Unmarshal(decoded.AuxiliaryData().Cbor(), &aux); err != nil {
		t.Fatal(err)
	}
	got, err := chain.DecodeAnchorMetadata(aux[chain.MetadataLabel])
	if err != nil {
		t.Fatal(err)
	}
	want := a
	want.Prev = in.TxID
	if got.Root != want.Root || got.Prev != want.Prev || got.Seq != want.Seq || got.TreeSize != want.TreeSize ||
		!bytes.Equal(got.BatchCID, want.BatchCID) || !bytes.Equal(got.Node, want.Node) {
		t.Fatalf("metadata decodes to %+v, want %+v", got, want)
	}
	if tx.Anchor.Prev != in.TxID {
		t.Fatal("Anchor.Prev is not the spent transaction")
	}

	// Body: one input (the given UTxO), one output (change to the same
	// address), fee, TTL.
	if ins := decoded.Inputs(); len(ins) != 1 || chain.TxID(ins[0].Id()) != in.TxID || ins[0].Index() != in.Index {
		t.Fatalf("inputs %v, want %s", ins, in)
	}
	outs := decoded.Outputs()
	if len(outs) != 1 || outs[0].Address().String() != addr.String() {
		t.Fatalf("outputs %v, want one to %s", outs, addr)
	}
	if outs[0].Amount().Uint64()+decoded.Fee().Uint64() != in.Lovelace {
		t.Fatalf("change %d + fee %d != input %d", outs[0].Amount(), decoded.Fee(), in.Lovelace)
	}
	if decoded.TTL() != 150_000_000 {
		t.Fatalf("TTL %d", decoded.TTL())
	}
}

// validate runs gouroboros's Conway rules for metadata, size, fee and
// signatures against tx.
func validate(t *testing.T, tx common.Transaction, ls common.LedgerState) map[string]error {
	t.Helper()
	pp := mainnetParams()
	return map[string]error{
		"metadata":   conway.UtxoValidateMetadata(tx, 0, ls, pp),
		"size":       conway.UtxoValidateMaxTxSizeUtxo(tx, 0, ls, pp),
		"fee":        conway.UtxoValidateFeeTooSmallUtxo(tx, 0, ls, pp),
		"signatures": common.ValidateVKeyWitnesses(tx),
		"output":     conway.UtxoValidateOutputTooSmallUtxo(tx, 0, ls, pp),
	}
}

func TestAnchorTxPassesConwayRules(t *testing.T) {
	for _, cidSize := range []int{36, 100} {
		a := batchAnchor()
		a.BatchCID = bytes.Repeat([]byte{7}, cidSize)
		in := testInput()
		tx, addr := buildTest(t, a, in)
		ls := ledgerWith(t, in, addr)
		for rule, err := range validate(t, tx.Tx, ls) {
			if err != nil {
				t.Errorf("CID of %d bytes: %s rule: %v", cidSize, rule, err)
			}
		}
	}
}

func TestAnchorTxFeeNegativeControl(t *testing.T) {
	a := batchAnchor()
	in := testInput()
	tx, addr := buildTest(t, a, in)
	ls := ledgerWith(t, in, addr)
	aux, err := auxiliaryData(tx.Anchor)
	if err != nil {
		t.Fatal(err)
	}
	low, err := assembleTx(tx.Anchor, in, testKey(), addr, tx.Fee-1, tx.TTL, aux)
	if err != nil {
		t.Fatal(err)
	}
	err = conway.UtxoValidateFeeTooSmallUtxo(low.Tx, 0, ls, mainnetParams())
	var tooSmall shelley.FeeTooSmallUtxoError
	if !errors.As(err, &tooSmall) {
		t.Fatalf("fee one lovelace below the fixed point: got %v, want FeeTooSmallUtxoError", err)
	}
}

func TestAnchorTxMetadataNegativeControls(t *testing.T) {
	a := batchAnchor()
	in := testInput()
	tx, addr := buildTest(t, a, in)
	ls := ledgerWith(t, in, addr)
	pp := mainnetParams()

	// The body commits to other auxiliary data than the transaction
	// carries: the body's hash no longer matches.
	good, _ := auxiliaryData(tx.Anchor)
	other := tx.Anchor
	other.Seq++
	otherAux, _ := auxiliaryData(other)
	body := tx.Tx.Body.Cbor()
	witness := tx.Tx.WitnessSet.Cbor()
	swapped, _ := cbor.Marshal([]any{cbor.RawMessage(body), cbor.RawMessage(witness), true, cbor.RawMessage(otherAux)})
	var swappedTx conway.ConwayTransaction
	if _, err := gcbor.Decode(swapped, &swappedTx); err != nil {
		t.Fatal(err)
	}
	if err := conway.UtxoValidateMetadata(&swappedTx, 0, ls, pp); err == nil {
		t.Fatal("auxiliary data not matching the body's hash passed")
	}
	if bytes.Equal(good, otherAux) {
		t.Fatal("control: the two auxiliary data are equal")
	}

	// A byte string of 65 bytes in the metadata breaks Cardano's limit.
	long, _ := cbor.Marshal(map[uint64]any{chain.MetadataLabel: bytes.Repeat([]byte{1}, 65)})
	bad, err := assembleTx(tx.Anchor, in, testKey(), addr, tx.Fee, tx.TTL, long)
	if err != nil {
		t.Fatal(err)
	}
	if err := conway.UtxoValidateMetadata(bad.Tx, 0, ls, pp); err == nil {
		t.Fatal("a 65-byte metadata byte string passed")
	}
	ok64, _ := cbor.Marshal(map[uint64]any{chain.MetadataLabel: bytes.Repeat([]byte{1}, 64)})
	fine, err := assembleTx(tx.Anchor, in, testKey(), addr, tx.Fee, tx.TTL, ok64)
	if err != nil {
		t.Fatal(err)
	}
	if err := conway.UtxoValidateMetadata(fine.Tx, 0, ls, pp); err != nil {
		t.Fatalf("control: a 64-byte metadata byte string failed: %v", err)
	}

	// A signature by another key over the same body fails.
	wrong := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x22}, 32))
	forged, err := assembleTx(tx.Anchor, in, wrong, addr, tx.Fee, tx.TTL, good)
	if err != nil {
		t.Fatal(err)
	}
	forged.Tx.WitnessSet = tx.Tx.WitnessSet
	if err := common.ValidateVKeyWitnesses(forged.Tx); err != nil {
		t.Fatalf("control: the right witness failed: %v", err)
	}
	sig := ed25519.Sign(wrong, tx.ID[:])
	forgedWS := conway.ConwayTransactionWitnessSet{VkeyWitnesses: gcbor.NewSetType([]common.VkeyWitness{{
		Vkey: testKey().Public().(ed25519.PublicKey), Signature: sig,
	}}, false)}
	forged.Tx.WitnessSet = forgedWS
	if err := common.ValidateVKeyWitnesses(forged.Tx); err == nil {
		t.Fatal("a signature by another key passed")
	}
}

func TestAnchorTxFeeFixedPoint(t *testing.T) {
	a := batchAnchor()
	in := testInput()
	tx, _ := buildTest(t, a, in)
	minFee, err := conway.MinFeeTx(tx.Tx, mainnetParams())
	if err != nil {
		t.Fatal(err)
	}
	if minFee != tx.Fee {
		t.Fatalf("fee %d, but the minimum fee of the signed transaction is %d", tx.Fee, minFee)
	}
	size, err := common.TxSize(tx.Tx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(44*size + 155381); tx.Fee != want {
		t.Fatalf("fee %d, want 44 * %d + 155381 = %d", tx.Fee, size, want)
	}
	// Input amounts across a CBOR integer width change the size; the fee
	// still settles.
	for _, amount := range []uint64{2_000_000, 1 << 32, 1<<32 + 200_000, 45_000_000_000_000_000} {
		in.Lovelace = amount
		tx, _ := buildTest(t, a, in)
		if m, _ := conway.MinFeeTx(tx.Tx, mainnetParams()); m != tx.Fee {
			t.Errorf("input %d: fee %d, min fee %d", amount, tx.Fee, m)
		}
	}
}

func TestAnchorTxInsufficientFunds(t *testing.T) {
	key := testKey()
	addr, _ := EnterpriseAddress(key.Public().(ed25519.PublicKey), Mainnet)
	in := testInput()
	for _, amount := range []uint64{0, 100_000, 1_000_000} {
		in.Lovelace = amount
		_, err := buildAnchorTx(batchAnchor(), in, key, addr, mainnetParams(), 1000)
		if !errors.Is(err, ErrInsufficientFunds) {
			t.Errorf("%d lovelace: got %v, want ErrInsufficientFunds", amount, err)
		}
	}
	// Positive control: 2 ADA pays the fee and the minimum change.
	in.Lovelace = 2_000_000
	if _, err := buildAnchorTx(batchAnchor(), in, key, addr, mainnetParams(), 1000); err != nil {
		t.Fatalf("2 ADA: %v", err)
	}
}

func BenchmarkAnchorTx(b *testing.B) {
	a := batchAnchor()
	in := testInput()
	key := testKey()
	addr, _ := EnterpriseAddress(key.Public().(ed25519.PublicKey), Mainnet)
	pp := mainnetParams()
	var tx *anchorTx
	for b.Loop() {
		var err error
		tx, err = buildAnchorTx(a, in, key, addr, pp, 150_000_000)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(tx.CBOR)), "tx-bytes")
	b.ReportMetric(float64(tx.Fee), "fee-lovelace")
}
