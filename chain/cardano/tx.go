package cardano

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	gcbor "github.com/blinklabs-io/gouroboros/cbor"
	"github.com/blinklabs-io/gouroboros/ledger/babbage"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	"github.com/blinklabs-io/gouroboros/ledger/mary"
	"github.com/blinklabs-io/gouroboros/ledger/shelley"
	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/chain"
)

// maxFeeIterations bounds the search for the fee fixed point. The fee
// changes the transaction's size by a few bytes at most, so it settles
// in two or three rounds.
const maxFeeIterations = 16

// ErrInsufficientFunds is returned when the spent output cannot pay the
// fee and still leave a change output of the minimum UTxO value.
var ErrInsufficientFunds = errors.New("cardano: insufficient funds")

// utxo is an ADA-only output of the payment address the Anchorer can spend.
type utxo struct {
	TxID     chain.TxID
	Index    uint32
	Lovelace uint64
}

func (u utxo) String() string { return fmt.Sprintf("%s#%d", u.TxID, u.Index) }

// anchorTx is a built and signed anchor transaction.
type anchorTx struct {
	ID     chain.TxID
	CBOR   []byte // the signed transaction as submitted
	Fee    uint64
	TTL    uint64 // the last slot it is valid in
	Input  utxo   // what it spends
	Change utxo   // its one output, back to the payment address
	Anchor chain.Anchor
	Tx     *conway.ConwayTransaction // CBOR decoded by gouroboros
}

// auxiliaryData is the transaction's auxiliary data: a metadata map (the
// Shelley form, valid in every later era) with a's encoding under
// chain.MetadataLabel.
func auxiliaryData(a chain.Anchor) ([]byte, error) {
	value, err := chain.EncodeAnchorMetadata(a)
	if err != nil {
		return nil, err
	}
	aux, err := cbor.Marshal(map[uint64]cbor.RawMessage{chain.MetadataLabel: value})
	if err != nil {
		return nil, fmt.Errorf("cardano: encode auxiliary data: %w", err)
	}
	return aux, nil
}

// buildAnchorTx builds the Conway transaction that spends in, pays the
// change back to addr, expires after slot ttl and carries a (with Prev
// set to the spent transaction) in its metadata, signed with key. The fee
// is the fixed point of conway.MinFeeTx over the signed transaction.
func buildAnchorTx(a chain.Anchor, in utxo, key ed25519.PrivateKey, addr common.Address, pp *conway.ConwayProtocolParameters, ttl uint64) (*anchorTx, error) {
	a.Prev = in.TxID
	aux, err := auxiliaryData(a)
	if err != nil {
		return nil, err
	}
	var fee uint64
	var tx *anchorTx
	for range maxFeeIterations {
		if in.Lovelace < fee {
			return nil, fmt.Errorf("%w: %s holds %d lovelace, the fee is %d", ErrInsufficientFunds, in, in.Lovelace, fee)
		}
		tx, err = assembleTx(a, in, key, addr, fee, ttl, aux)
		if err != nil {
			return nil, err
		}
		minFee, err := conway.MinFeeTx(tx.Tx, pp)
		if err != nil {
			return nil, fmt.Errorf("cardano: minimum fee: %w", err)
		}
		if minFee == fee {
			return tx, checkChange(tx, pp)
		}
		fee = minFee
	}
	return nil, fmt.Errorf("cardano: the fee did not settle after %d rounds (last %d lovelace)", maxFeeIterations, fee)
}

// checkChange refuses a transaction whose change output is below the
// minimum UTxO value.
func checkChange(tx *anchorTx, pp *conway.ConwayProtocolParameters) error {
	out := tx.Tx.Body.TxOutputs[0]
	minCoin, err := conway.MinCoinTxOut(&out, pp)
	if err != nil {
		return fmt.Errorf("cardano: minimum UTxO value: %w", err)
	}
	if tx.Change.Lovelace < minCoin {
		return fmt.Errorf("%w: %s holds %d lovelace; the fee %d leaves %d, below the minimum output of %d",
			ErrInsufficientFunds, tx.Input, tx.Input.Lovelace, tx.Fee, tx.Change.Lovelace, minCoin)
	}
	return nil
}

// assembleTx encodes and signs the transaction with the given fee.
func assembleTx(a chain.Anchor, in utxo, key ed25519.PrivateKey, addr common.Address, fee, ttl uint64, aux []byte) (*anchorTx, error) {
	auxHash := common.Blake2b256Hash(aux)
	change := in.Lovelace - fee
	body := conway.ConwayTransactionBody{
		TxInputs: conway.NewConwayTransactionInputSet([]shelley.ShelleyTransactionInput{
			{TxId: common.Blake2b256(in.TxID), OutputIndex: in.Index},
		}),
		TxOutputs: []babbage.BabbageTransactionOutput{{
			OutputAddress: addr,
			OutputAmount:  mary.MaryTransactionOutputValue{Amount: change},
		}},
		TxFee:         fee,
		Ttl:           ttl,
		TxAuxDataHash: &auxHash,
	}
	bodyCBOR, err := gcbor.Encode(&body)
	if err != nil {
		return nil, fmt.Errorf("cardano: encode transaction body: %w", err)
	}
	id := chain.TxID(common.Blake2b256Hash(bodyCBOR))
	witnesses := conway.ConwayTransactionWitnessSet{
		VkeyWitnesses: gcbor.NewSetType([]common.VkeyWitness{{
			Vkey:      key.Public().(ed25519.PublicKey),
			Signature: ed25519.Sign(key, id[:]),
		}}, false),
	}
	witnessCBOR, err := gcbor.Encode(&witnesses)
	if err != nil {
		return nil, fmt.Errorf("cardano: encode witness set: %w", err)
	}
	raw, err := cbor.Marshal([]any{
		cbor.RawMessage(bodyCBOR),
		cbor.RawMessage(witnessCBOR),
		true,
		cbor.RawMessage(aux),
	})
	if err != nil {
		return nil, fmt.Errorf("cardano: encode transaction: %w", err)
	}
	var decoded conway.ConwayTransaction
	if _, err := gcbor.Decode(raw, &decoded); err != nil {
		return nil, fmt.Errorf("cardano: built transaction does not decode: %w", err)
	}
	if got := chain.TxID(decoded.Id()); got != id {
		return nil, fmt.Errorf("cardano: built transaction decodes to ID %s, want %s", got, id)
	}
	return &anchorTx{
		ID:     id,
		CBOR:   raw,
		Fee:    fee,
		TTL:    ttl,
		Input:  in,
		Change: utxo{TxID: id, Index: 0, Lovelace: change},
		Anchor: a,
		Tx:     &decoded,
	}, nil
}
