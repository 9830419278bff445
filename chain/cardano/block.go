package cardano

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/fxamacker/cbor/v2"

	"github.com/volo-chat/volo/chain"
)

// ErrBadBlock is returned by DecodeBlock for bytes that are not a valid
// block of a supported era.
var ErrBadBlock = errors.New("cardano: bad block")

// blockDecMode reads the outer structure of a block as the node sent it,
// keeping every element's bytes as they are.
var blockDecMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// DecodeBlock turns a block as a node sends it (blockType is gouroboros's
// block type, ledger.BlockTypeConway for Conway; raw its CBOR) into a
// chain.Block. gouroboros decodes it and checks the body hash against the
// header; each transaction's ID is computed here from the body's bytes as
// they are in the block (and must agree with gouroboros); the Volo anchor
// is read only from auxiliary data whose Blake2b-256 hash is the one the
// body commits to, and only for valid transactions; Signers lists the
// keys of the vkey witnesses whose signatures over the ID verify.
// Blocks of the Shelley era and later are supported.
func DecodeBlock(blockType uint, raw []byte) (*chain.Block, error) {
	if blockType < ledger.BlockTypeShelley {
		return nil, fmt.Errorf("%w: block type %d (Byron) is not supported", ErrBadBlock, blockType)
	}
	blk, err := ledger.NewBlockFromCbor(blockType, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBlock, err)
	}
	// [header, bodies, witness sets, auxiliary data, (invalid txs)]
	var parts []cbor.RawMessage
	if err := blockDecMode.Unmarshal(raw, &parts); err != nil || len(parts) < 4 {
		return nil, fmt.Errorf("%w: not a block array (%v)", ErrBadBlock, err)
	}
	var bodies []cbor.RawMessage
	if err := blockDecMode.Unmarshal(parts[1], &bodies); err != nil {
		return nil, fmt.Errorf("%w: transaction bodies: %v", ErrBadBlock, err)
	}
	var auxData map[uint64]cbor.RawMessage
	if err := blockDecMode.Unmarshal(parts[3], &auxData); err != nil {
		return nil, fmt.Errorf("%w: auxiliary data: %v", ErrBadBlock, err)
	}
	txs := blk.Transactions()
	if len(txs) != len(bodies) {
		return nil, fmt.Errorf("%w: %d transaction bodies, %d transactions", ErrBadBlock, len(bodies), len(txs))
	}
	hash := blk.Hash()
	out := &chain.Block{
		Point:   chain.Point{Slot: blk.SlotNumber(), Hash: hash.Bytes()},
		BlockNo: blk.BlockNumber(),
		Txs:     make([]chain.Tx, len(txs)),
	}
	for i, tx := range txs {
		id := chain.TxID(common.Blake2b256Hash(bodies[i]))
		if theirs := chain.TxID(tx.Hash()); theirs != id {
			return nil, fmt.Errorf("%w: transaction %d: ID %s from the body bytes, gouroboros says %s", ErrBadBlock, i, id, theirs)
		}
		t := chain.Tx{ID: id, Signers: verifiedSigners(tx, id)}
		if aux, ok := auxData[uint64(i)]; ok && tx.IsValid() {
			t.Anchor = anchorFromAuxData(tx.AuxDataHash(), aux)
		}
		out.Txs[i] = t
	}
	return out, nil
}

// verifiedSigners returns the public keys of tx's vkey witnesses whose
// Ed25519 signatures over id verify.
func verifiedSigners(tx common.Transaction, id chain.TxID) [][]byte {
	w := tx.Witnesses()
	if w == nil {
		return nil
	}
	var signers [][]byte
	for _, vw := range w.Vkey() {
		if len(vw.Vkey) != ed25519.PublicKeySize || len(vw.Signature) != ed25519.SignatureSize {
			continue
		}
		if ed25519.Verify(ed25519.PublicKey(vw.Vkey), id[:], vw.Signature) {
			signers = append(signers, append([]byte(nil), vw.Vkey...))
		}
	}
	return signers
}

// anchorFromAuxData reads the Volo anchor from a transaction's auxiliary
// data when its hash is bodyHash; nil when it is not, or there is no
// anchor, or it does not decode.
func anchorFromAuxData(bodyHash *common.Blake2b256, aux []byte) *chain.Anchor {
	if bodyHash == nil || common.Blake2b256Hash(aux) != *bodyHash {
		return nil
	}
	md, ok := metadataMap(aux)
	if !ok {
		return nil
	}
	var labels map[uint64]cbor.RawMessage
	if err := blockDecMode.Unmarshal(md, &labels); err != nil {
		return nil
	}
	value, ok := labels[chain.MetadataLabel]
	if !ok {
		return nil
	}
	a, err := chain.DecodeAnchorMetadata(value)
	if err != nil {
		return nil
	}
	return &a
}

// auxDataTag is the CBOR tag of Alonzo-and-later auxiliary data.
const auxDataTag = 259

// metadataMap finds the metadata map in auxiliary data of any of its
// three forms: the map itself (Shelley), [map, scripts] (Allegra/Mary),
// or #6.259({0: map, ...}) (Alonzo and later).
func metadataMap(aux []byte) (cbor.RawMessage, bool) {
	if len(aux) == 0 {
		return nil, false
	}
	switch aux[0] >> 5 {
	case 5: // map
		return aux, true
	case 4: // array
		var parts []cbor.RawMessage
		if err := blockDecMode.Unmarshal(aux, &parts); err != nil || len(parts) != 2 {
			return nil, false
		}
		return parts[0], true
	case 6: // tag
		var tag cbor.RawTag
		if err := blockDecMode.Unmarshal(aux, &tag); err != nil || tag.Number != auxDataTag {
			return nil, false
		}
		var fields map[uint64]cbor.RawMessage
		if err := blockDecMode.Unmarshal(tag.Content, &fields); err != nil {
			return nil, false
		}
		md, ok := fields[0]
		return md, ok
	}
	return nil, false
}
