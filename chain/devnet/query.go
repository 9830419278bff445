package devnet

import (
	"fmt"
	"math/big"
	"time"

	"github.com/blinklabs-io/gouroboros/cbor"
	"github.com/blinklabs-io/gouroboros/protocol/localstatequery"
)

// SafeZone is the devnet's stability window in slots (mainnet's 3k/f):
// the era history reaches this far past the tip.
const SafeZone = 129600

// eraCount is the number of eras before and including Conway (Byron,
// Shelley, Allegra, Mary, Alonzo, Babbage, Conway): the devnet starts in
// Conway, so every earlier era has length zero.
const eraCount = eraIDConway + 1

func (d *Devnet) acquire(_ localstatequery.CallbackContext, target localstatequery.AcquireTarget, _ bool) error {
	p, ok := target.(localstatequery.AcquireSpecificPoint)
	if !ok {
		return nil // the volatile or immutable tip: both are the tip
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.heightOfLocked(p.Point); !ok {
		return localstatequery.ErrAcquireFailurePointNotOnChain
	}
	return nil
}

// query answers a LocalStateQuery from the current state, each result
// wrapped as cardano-node wraps it: hard-fork and top-level queries bare,
// era queries in a one-element list (the "no era mismatch" case).
func (d *Devnet) query(_ localstatequery.CallbackContext, q localstatequery.QueryWrapper) (any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	tip := d.tipLocked()
	switch v := q.Query.(type) {
	case *localstatequery.SystemStartQuery:
		return d.systemStartResult(), nil
	case *localstatequery.ChainBlockNoQuery:
		if tip.Point.IsOrigin() {
			return []any{0}, nil
		}
		return []any{1, tip.BlockNo}, nil
	case *localstatequery.ChainPointQuery:
		return pointOf(tip.Point.Slot, tip.Point.Hash), nil
	case *localstatequery.BlockQuery:
		switch bq := v.Query.(type) {
		case *localstatequery.HardForkQuery:
			switch bq.Query.(type) {
			case *localstatequery.HardForkCurrentEraQuery:
				return eraIDConway, nil
			case *localstatequery.HardForkEraHistoryQuery:
				return d.eraHistoryLocked(), nil
			}
			return nil, fmt.Errorf("devnet: hard-fork query %T not supported", bq.Query)
		case *localstatequery.ShelleyQuery:
			if bq.Era != eraIDConway {
				return nil, fmt.Errorf("devnet: query for era %d, the devnet is in era %d", bq.Era, eraIDConway)
			}
			return d.eraQueryLocked(bq.Query)
		}
		return nil, fmt.Errorf("devnet: block query %T not supported", v.Query)
	}
	return nil, fmt.Errorf("devnet: query %T not supported", q.Query)
}

func (d *Devnet) eraQueryLocked(q any) (any, error) {
	switch v := q.(type) {
	case *localstatequery.ShelleyEpochNoQuery:
		return []any{d.nextSlotLocked() / EpochLength}, nil
	case *localstatequery.ShelleyCurrentProtocolParamsQuery:
		return []any{d.ledger.pparams}, nil
	case *localstatequery.ShelleyUtxoByAddressQuery:
		return utxoResult(d.ledger.byAddress(v.Addrs))
	case *localstatequery.ShelleyUtxoByTxinQuery:
		keys := make([]utxoKey, 0, len(v.TxIns))
		for _, in := range v.TxIns {
			keys = append(keys, utxoKey{tx: in.Id(), index: in.Index()})
		}
		return utxoResult(d.ledger.byInput(keys))
	case *localstatequery.ShelleyUtxoWholeQuery:
		all := make([]utxoKey, 0, len(d.ledger.utxo))
		for k := range d.ledger.utxo {
			all = append(all, k)
		}
		return utxoResult(d.ledger.byInput(all))
	}
	return nil, fmt.Errorf("devnet: era query %T not supported", q)
}

// utxoResult encodes UTxOs as the result of a UTxO query: a one-element
// list holding a map from [tx id, index] to the output as it was made.
func utxoResult(entries []utxoEntry) (cbor.RawMessage, error) {
	out := cborHead(cborArray, 1)
	out = append(out, cborHead(cborMap, uint64(len(entries)))...)
	for _, e := range entries {
		k, err := cbor.Encode([]any{e.key.tx[:], e.key.index})
		if err != nil {
			return nil, fmt.Errorf("devnet: encode UTxO: %w", err)
		}
		out = append(out, k...)
		out = append(out, e.raw...)
	}
	return out, nil
}

// systemStartResult is the system start as cardano-node encodes a UTC
// time: year, day of the year, picoseconds of the day.
func (d *Devnet) systemStartResult() localstatequery.SystemStartResult {
	t := d.systemStart.UTC()
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	var r localstatequery.SystemStartResult
	r.Year.SetInt64(int64(t.Year()))
	r.Day = int64(t.YearDay())
	r.Picoseconds.Mul(big.NewInt(int64(t.Sub(midnight))), big.NewInt(1000))
	return r
}

// eraHistoryLocked is the era summary a node gives: every era before
// Conway empty at the start, Conway from slot 0 to the end of the epoch
// past the safe zone.
func (d *Devnet) eraHistoryLocked() []any {
	bound := func(slot uint64) []any {
		picos := new(big.Int).Mul(new(big.Int).SetUint64(slot), big.NewInt(int64(SlotLength/time.Nanosecond)*1000))
		return []any{picos, slot, slot / EpochLength}
	}
	params := []any{uint64(EpochLength), uint64(SlotLength / time.Millisecond), []any{0, SafeZone, []any{0}}, SafeZone}
	eras := make([]any, 0, eraCount)
	for range eraCount - 1 {
		eras = append(eras, []any{bound(0), bound(0), params})
	}
	horizon := (d.nextSlotLocked()+SafeZone)/EpochLength + 1
	eras = append(eras, []any{bound(0), bound(horizon * EpochLength), params})
	return eras
}
