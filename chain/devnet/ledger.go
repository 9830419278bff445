package devnet

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/blinklabs-io/gouroboros/cbor"
	"github.com/blinklabs-io/gouroboros/ledger/babbage"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"
)

// ErrRefused is wrapped by every error that refuses a submitted
// transaction; the text after it is the reason the submitter sees.
var ErrRefused = errors.New("devnet: transaction refused")

// The devnet's protocol parameters: mainnet's Conway values where they
// matter to a payment transaction.
const (
	MinFeeA        = 44     // lovelace per byte of transaction
	MinFeeB        = 155381 // lovelace per transaction
	MaxTxSize      = 16384  // bytes
	MaxBlockBody   = 90112  // bytes
	MaxHeaderSize  = 1100   // bytes
	CoinsPerUTxOB  = 4310   // lovelace per byte of UTxO entry
	MaxValueSize   = 5000   // bytes
	ProtocolMajor  = 10     // Conway after the Plomin hard fork
	ProtocolMinor  = 0      //
	EpochLength    = 432000 // slots per epoch (mainnet's, at 1 s a slot)
	SlotLength     = time.Second
	eraIDConway    = conway.EraIdConway
	blockTypeConwy = conway.BlockTypeConway
)

// protocolParameters returns the devnet's Conway protocol parameters.
func protocolParameters() *conway.ConwayProtocolParameters {
	rat := func(n, d int64) *cbor.Rat { return &cbor.Rat{Rat: big.NewRat(n, d)} }
	val := func(n, d int64) cbor.Rat { return cbor.Rat{Rat: big.NewRat(n, d)} }
	return &conway.ConwayProtocolParameters{
		MinFeeA:              MinFeeA,
		MinFeeB:              MinFeeB,
		MaxBlockBodySize:     MaxBlockBody,
		MaxTxSize:            MaxTxSize,
		MaxBlockHeaderSize:   MaxHeaderSize,
		KeyDeposit:           2_000_000,
		PoolDeposit:          500_000_000,
		MaxEpoch:             18,
		NOpt:                 500,
		A0:                   rat(3, 10),
		Rho:                  rat(3, 1000),
		Tau:                  rat(1, 5),
		ProtocolVersion:      common.ProtocolParametersProtocolVersion{Major: ProtocolMajor, Minor: ProtocolMinor},
		MinPoolCost:          170_000_000,
		AdaPerUtxoByte:       CoinsPerUTxOB,
		CostModels:           map[uint][]int64{},
		ExecutionCosts:       common.ExUnitPrice{MemPrice: rat(577, 10000), StepPrice: rat(721, 10000000)},
		MaxTxExUnits:         common.ExUnits{Memory: 14_000_000, Steps: 10_000_000_000},
		MaxBlockExUnits:      common.ExUnits{Memory: 62_000_000, Steps: 20_000_000_000},
		MaxValueSize:         MaxValueSize,
		CollateralPercentage: 150,
		MaxCollateralInputs:  3,
		PoolVotingThresholds: conway.PoolVotingThresholds{
			MotionNoConfidence: val(51, 100), CommitteeNormal: val(51, 100), CommitteeNoConfidence: val(51, 100),
			HardForkInitiation: val(51, 100), PpSecurityGroup: val(51, 100),
		},
		DRepVotingThresholds: conway.DRepVotingThresholds{
			MotionNoConfidence: val(67, 100), CommitteeNormal: val(67, 100), CommitteeNoConfidence: val(3, 5),
			UpdateToConstitution: val(3, 4), HardForkInitiation: val(3, 5), PpNetworkGroup: val(67, 100),
			PpEconomicGroup: val(67, 100), PpTechnicalGroup: val(67, 100), PpGovGroup: val(3, 4),
			TreasuryWithdrawal: val(67, 100),
		},
		MinCommitteeSize:           7,
		CommitteeTermLimit:         146,
		GovActionValidityPeriod:    6,
		GovActionDeposit:           100_000_000_000,
		DRepDeposit:                500_000_000,
		DRepInactivityPeriod:       20,
		MinFeeRefScriptCostPerByte: rat(15, 1),
	}
}

// utxoKey names an unspent output.
type utxoKey struct {
	tx    [32]byte
	index uint32
}

func (k utxoKey) compare(o utxoKey) int {
	if c := bytes.Compare(k.tx[:], o.tx[:]); c != 0 {
		return c
	}
	return cmp.Compare(k.index, o.index)
}

// utxoEntry is an unspent output: its CBOR as it was written in the
// transaction that made it, and the decoded form the rules read.
type utxoEntry struct {
	key    utxoKey
	raw    []byte
	output common.TransactionOutput
}

// ledgerTx is an accepted transaction, kept byte for byte as submitted.
type ledgerTx struct {
	id       [32]byte
	raw      []byte          // the whole transaction
	body     cbor.RawMessage // its body, witness set and auxiliary data, as submitted
	witness  cbor.RawMessage
	aux      cbor.RawMessage // nil when the transaction carries none
	tx       *conway.ConwayTransaction
	inputs   []utxoKey
	produced []utxoEntry
}

// genesisOutput makes the output funding addr with lovelace at genesis.
// Like a Shelley genesis, the output's transaction ID is the Blake2b-256
// hash of the address bytes, index 0.
func genesisOutput(addr common.Address, lovelace uint64) (utxoEntry, error) {
	addrBytes, err := addr.Bytes()
	if err != nil {
		return utxoEntry{}, fmt.Errorf("devnet: genesis address %s: %w", addr, err)
	}
	raw, err := cbor.Encode([]any{addrBytes, lovelace})
	if err != nil {
		return utxoEntry{}, fmt.Errorf("devnet: genesis output: %w", err)
	}
	out, err := babbage.NewBabbageTransactionOutputFromCbor(raw)
	if err != nil {
		return utxoEntry{}, fmt.Errorf("devnet: genesis output: %w", err)
	}
	return utxoEntry{key: utxoKey{tx: common.Blake2b256Hash(addrBytes)}, raw: raw, output: out}, nil
}

// decodeTx splits a submitted Conway transaction into its parts, keeping
// each part's bytes, and decodes it with gouroboros. It refuses anything
// that is not a well-formed Conway transaction.
func decodeTx(raw []byte) (*ledgerTx, error) {
	if len(raw) > MaxTxSize {
		return nil, fmt.Errorf("%w: transaction is %d bytes, the maximum is %d", ErrRefused, len(raw), MaxTxSize)
	}
	var parts []cbor.RawMessage
	n, err := cbor.Decode(raw, &parts)
	if err != nil {
		return nil, fmt.Errorf("%w: not a CBOR transaction: %v", ErrRefused, err)
	}
	if n != len(raw) {
		return nil, fmt.Errorf("%w: %d bytes after the transaction", ErrRefused, len(raw)-n)
	}
	if len(parts) != 4 {
		return nil, fmt.Errorf("%w: a Conway transaction has 4 parts, this one %d", ErrRefused, len(parts))
	}
	tx, err := conway.NewConwayTransactionFromCbor(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	lt := &ledgerTx{
		id:      common.Blake2b256Hash(parts[0]),
		raw:     raw,
		body:    parts[0],
		witness: parts[1],
		tx:      tx,
	}
	if !bytes.Equal(parts[3], []byte{0xf6}) {
		lt.aux = parts[3]
	}
	if tx.Hash() != lt.id {
		return nil, fmt.Errorf("%w: transaction ID does not match its body bytes", ErrRefused)
	}
	for _, in := range tx.Inputs() {
		lt.inputs = append(lt.inputs, utxoKey{tx: in.Id(), index: in.Index()})
	}
	for i, out := range tx.Outputs() {
		outRaw := out.Cbor()
		if len(outRaw) == 0 {
			if outRaw, err = cbor.Encode(out); err != nil {
				return nil, fmt.Errorf("%w: output %d: %v", ErrRefused, i, err)
			}
		}
		lt.produced = append(lt.produced, utxoEntry{key: utxoKey{tx: lt.id, index: uint32(i)}, raw: outRaw, output: out})
	}
	return lt, nil
}

// unsupported refuses what the devnet's ledger does not model: scripts,
// certificates, withdrawals, minting, collateral, governance.
func unsupported(tx *conway.ConwayTransaction) error {
	var what string
	b, w := &tx.Body, &tx.WitnessSet
	switch {
	case !tx.IsValid():
		what = "transactions marked invalid"
	case len(b.TxCertificates) > 0:
		what = "certificates"
	case len(b.TxWithdrawals) > 0:
		what = "withdrawals"
	case b.TxMint != nil:
		what = "minting"
	case len(b.TxCollateral.Items()) > 0 || b.TxCollateralReturn != nil || b.TxTotalCollateral != 0:
		what = "collateral"
	case len(b.TxReferenceInputs.Items()) > 0:
		what = "reference inputs"
	case len(b.TxVotingProcedures) > 0 || len(b.TxProposalProcedures) > 0 || b.TxDonation != 0 || b.CurrentTreasuryValuePresent():
		what = "governance"
	case b.TxScriptDataHash != nil:
		what = "scripts"
	case len(w.WsNativeScripts.Items()) > 0 || len(w.WsPlutusV1Scripts.Items()) > 0 || len(w.WsPlutusV2Scripts.Items()) > 0 ||
		len(w.WsPlutusV3Scripts.Items()) > 0 || len(w.WsPlutusData.Items()) > 0 || len(w.BootstrapWitnesses.Items()) > 0 ||
		w.WsRedeemers.Len() > 0:
		what = "scripts, datums, redeemers or bootstrap witnesses"
	default:
		for i, out := range tx.Outputs() {
			if a := out.Assets(); a != nil && len(a.Policies()) > 0 {
				return fmt.Errorf("%w: output %d carries native assets, which the devnet does not support", ErrRefused, i)
			}
			if out.ScriptRef() != nil || out.Datum() != nil || out.DatumHash() != nil {
				return fmt.Errorf("%w: output %d carries a datum or script, which the devnet does not support", ErrRefused, i)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: the devnet does not support %s", ErrRefused, what)
}

// rule is one of gouroboros's Conway UTxO rules the devnet applies.
type rule struct {
	name  string
	check common.UtxoValidationRuleFunc
}

// rules are gouroboros's own Conway rules that apply to the payment
// transactions the devnet accepts, in the order their failures are most
// useful to read.
var rules = []rule{
	{"InputSetEmpty", conway.UtxoValidateInputSetEmptyUtxo},
	{"NoDuplicateInputs", conway.UtxoValidateNoDuplicateInputs},
	{"BadInputs", conway.UtxoValidateBadInputsUtxo},
	{"OutsideValidityInterval", conway.UtxoValidateOutsideValidityIntervalUtxo},
	{"MaxTxSize", conway.UtxoValidateMaxTxSizeUtxo},
	{"Metadata", conway.UtxoValidateMetadata},
	{"FeeTooSmall", conway.UtxoValidateFeeTooSmallUtxo},
	{"ValueNotConserved", conway.UtxoValidateValueNotConservedUtxo},
	{"OutputTooSmall", conway.UtxoValidateOutputTooSmallUtxo},
	{"OutputTooBig", conway.UtxoValidateOutputTooBigUtxo},
	{"WrongNetwork", conway.UtxoValidateWrongNetwork},
	{"TransactionNetworkId", conway.UtxoValidateTransactionNetworkId},
	{"RequiredVKeyWitnesses", conway.UtxoValidateRequiredVKeyWitnesses},
	{"Signatures", conway.UtxoValidateSignatures},
}

// ledger is the devnet's UTxO set. It is not safe for concurrent use;
// Devnet guards it with its mutex.
type ledger struct {
	networkID uint
	pparams   *conway.ConwayProtocolParameters
	genesis   []utxoEntry
	utxo      map[utxoKey]utxoEntry
}

func newLedger(networkID uint, genesis []utxoEntry) *ledger {
	l := &ledger{networkID: networkID, pparams: protocolParameters(), genesis: genesis}
	l.reset()
	return l
}

// reset returns the UTxO set to genesis.
func (l *ledger) reset() {
	l.utxo = make(map[utxoKey]utxoEntry, len(l.genesis))
	for _, e := range l.genesis {
		l.utxo[e.key] = e
	}
}

// validate checks tx against the UTxO set for inclusion in a block at
// slot. Every error wraps ErrRefused.
func (l *ledger) validate(tx *ledgerTx, slot uint64) error {
	if err := unsupported(tx.tx); err != nil {
		return err
	}
	for _, r := range rules {
		if err := r.check(tx.tx, slot, ledgerView{l}, l.pparams); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrRefused, r.name, err)
		}
	}
	return nil
}

// apply spends tx's inputs and adds its outputs. The caller validated it.
func (l *ledger) apply(tx *ledgerTx) {
	for _, in := range tx.inputs {
		delete(l.utxo, in)
	}
	for _, out := range tx.produced {
		l.utxo[out.key] = out
	}
}

// byAddress returns the unspent outputs paying to one of addrs, in key order.
func (l *ledger) byAddress(addrs []common.Address) []utxoEntry {
	want := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if b, err := a.Bytes(); err == nil {
			want[string(b)] = true
		}
	}
	var out []utxoEntry
	for _, e := range l.utxo {
		if b, err := e.output.Address().Bytes(); err == nil && want[string(b)] {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b utxoEntry) int { return a.key.compare(b.key) })
	return out
}

// byInput returns the unspent outputs among keys, in key order.
func (l *ledger) byInput(keys []utxoKey) []utxoEntry {
	var out []utxoEntry
	for _, k := range keys {
		if e, ok := l.utxo[k]; ok {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b utxoEntry) int { return a.key.compare(b.key) })
	return slices.CompactFunc(out, func(a, b utxoEntry) bool { return a.key == b.key })
}

// errNoState answers the questions of a ledger the devnet does not have.
var errNoState = errors.New("devnet: the devnet ledger has no stake, pools or governance")

// ledgerView is the UTxO set as gouroboros's rules read a ledger state.
// The devnet has no stake credentials, pools, rewards or governance:
// those questions get empty answers (the transactions that would ask
// them are refused before the rules run).
type ledgerView struct{ l *ledger }

var _ common.LedgerState = ledgerView{}

func (v ledgerView) UtxoById(in common.TransactionInput) (common.Utxo, error) {
	e, ok := v.l.utxo[utxoKey{tx: in.Id(), index: in.Index()}]
	if !ok {
		return common.Utxo{}, fmt.Errorf("devnet: no unspent output %s", in)
	}
	return common.Utxo{Id: in, Output: e.output}, nil
}

func (v ledgerView) NetworkId() uint { return v.l.networkID }

func (ledgerView) CostModels() map[common.PlutusLanguage]common.CostModel { return nil }

func (ledgerView) StakeRegistration([]byte) ([]common.StakeRegistrationCertificate, error) {
	return nil, nil
}
func (ledgerView) IsStakeCredentialRegistered(common.Credential) bool { return false }
func (ledgerView) SlotToTime(uint64) (time.Time, error)               { return time.Time{}, errNoState }
func (ledgerView) TimeToSlot(time.Time) (uint64, error)               { return 0, errNoState }
func (ledgerView) PoolCurrentState(common.PoolKeyHash) (*common.PoolRegistrationCertificate, *uint64, error) {
	return nil, nil, nil
}
func (ledgerView) IsPoolRegistered(common.PoolKeyHash) bool { return false }
func (ledgerView) IsVrfKeyInUse(common.Blake2b256) (bool, common.PoolKeyHash, error) {
	return false, common.PoolKeyHash{}, nil
}
func (ledgerView) CalculateRewards(common.AdaPots, common.RewardSnapshot, common.RewardParameters) (*common.RewardCalculationResult, error) {
	return nil, errNoState
}
func (ledgerView) GetAdaPots() common.AdaPots                       { return common.AdaPots{} }
func (ledgerView) UpdateAdaPots(common.AdaPots) error               { return errNoState }
func (ledgerView) IsRewardAccountRegistered(common.Credential) bool { return false }
func (ledgerView) RewardAccountBalance(common.Credential) (*uint64, error) {
	return nil, nil
}
func (ledgerView) GetRewardSnapshot(uint64) (common.RewardSnapshot, error) {
	return common.RewardSnapshot{}, errNoState
}
func (ledgerView) CommitteeMember(common.Blake2b224) (*common.CommitteeMember, error) {
	return nil, nil
}
func (ledgerView) CommitteeMembers() ([]common.CommitteeMember, error) { return nil, nil }
func (ledgerView) DRepRegistration(common.Credential) (*common.DRepRegistration, error) {
	return nil, nil
}
func (ledgerView) DRepRegistrations() ([]common.DRepRegistration, error) { return nil, nil }
func (ledgerView) Constitution() (*common.Constitution, error)           { return nil, nil }
func (ledgerView) TreasuryValue() (uint64, error)                        { return 0, nil }
func (ledgerView) GovActionById(common.GovActionId) (*common.GovActionState, error) {
	return nil, nil
}
func (ledgerView) GovActionExists(common.GovActionId) bool { return false }

// pointOf is the gouroboros form of a block's point.
func pointOf(slot uint64, hash []byte) pcommon.Point {
	if len(hash) == 0 {
		return pcommon.NewPointOrigin()
	}
	return pcommon.NewPoint(slot, hash)
}
