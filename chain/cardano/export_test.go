package cardano

import (
	"context"

	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/chain"
)

// SubmitTampered builds an's transaction as Anchor would, swaps its
// auxiliary data for another anchor's (so the body's hash no longer
// matches) and submits it, for the refusal tests.
func (a *Anchorer) SubmitTampered(ctx context.Context, an chain.Anchor) error {
	st, err := a.query(ctx)
	if err != nil {
		return err
	}
	in, err := a.chooseInput(st.utxos)
	if err != nil {
		return err
	}
	tx, err := buildAnchorTx(an, in, a.key, a.addr, st.params, st.point.Slot+a.cfg.TTL)
	if err != nil {
		return err
	}
	other := tx.Anchor
	other.Seq++
	aux, err := auxiliaryData(other)
	if err != nil {
		return err
	}
	raw, err := cbor.Marshal([]any{
		cbor.RawMessage(tx.Tx.Body.Cbor()),
		cbor.RawMessage(tx.Tx.WitnessSet.Cbor()),
		true,
		cbor.RawMessage(aux),
	})
	if err != nil {
		return err
	}
	return a.submit(ctx, &anchorTx{ID: tx.ID, CBOR: raw})
}
