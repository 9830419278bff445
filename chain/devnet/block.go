package devnet

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"github.com/blinklabs-io/gouroboros/cbor"
	"golang.org/x/crypto/blake2b"

	"github.com/volo-chat/volo/chain"
)

// Sizes of the header fields a real block producer fills with VRF and KES
// material; the devnet fills them with deterministic bytes of those sizes.
const (
	vrfVkeySize   = 32
	vrfOutputSize = 64
	vrfProofSize  = 80
	kesVkeySize   = 32
	kesSigSize    = 448
)

// block is one block of the devnet's chain.
type block struct {
	number uint64
	slot   uint64
	hash   [32]byte
	raw    []byte // the block's CBOR, as served
	txs    []*ledgerTx
}

func (b *block) point() chain.Point {
	return chain.Point{Slot: b.slot, Hash: b.hash[:]}
}

// cborHead is the head of a CBOR item of major type major and argument n.
func cborHead(major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return []byte{m | byte(n)}
	case n <= 0xff:
		return []byte{m | 24, byte(n)}
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16([]byte{m | 25}, uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32([]byte{m | 26}, uint32(n))
	default:
		return binary.BigEndian.AppendUint64([]byte{m | 27}, n)
	}
}

const (
	cborUint  = 0
	cborArray = 4
	cborMap   = 5
)

// fill returns n deterministic bytes derived from label and seed.
func fill(label string, seed []byte, n int) []byte {
	out := make([]byte, 0, n+blake2b.Size)
	for i := uint32(0); len(out) < n; i++ {
		h, _ := blake2b.New512(nil)
		h.Write([]byte("volo/devnet/" + label))
		h.Write(binary.BigEndian.AppendUint32(nil, i))
		h.Write(seed)
		out = h.Sum(out)
	}
	return out[:n]
}

// blockBody is the four body parts of a Conway block, encoded.
type blockBody struct {
	bodies, witnesses, aux, invalid []byte
}

func encodeBody(txs []*ledgerTx) blockBody {
	var b blockBody
	b.bodies = cborHead(cborArray, uint64(len(txs)))
	b.witnesses = cborHead(cborArray, uint64(len(txs)))
	withAux := 0
	for _, tx := range txs {
		b.bodies = append(b.bodies, tx.body...)
		b.witnesses = append(b.witnesses, tx.witness...)
		if tx.aux != nil {
			withAux++
		}
	}
	b.aux = cborHead(cborMap, uint64(withAux))
	for i, tx := range txs {
		if tx.aux != nil {
			b.aux = append(b.aux, cborHead(cborUint, uint64(i))...)
			b.aux = append(b.aux, tx.aux...)
		}
	}
	b.invalid = cborHead(cborArray, 0)
	return b
}

// hash is the block body hash as Cardano computes it from Alonzo on: the
// Blake2b-256 of the concatenated Blake2b-256 hashes of the four parts.
func (b blockBody) hash() [32]byte {
	var all []byte
	for _, part := range [][]byte{b.bodies, b.witnesses, b.aux, b.invalid} {
		h := blake2b.Sum256(part)
		all = append(all, h[:]...)
	}
	return blake2b.Sum256(all)
}

func (b blockBody) size() int {
	return len(b.bodies) + len(b.witnesses) + len(b.aux) + len(b.invalid)
}

// makeBlock builds the Conway block number at slot after prev (nil for
// the first block) carrying txs, issued by key.
func makeBlock(key ed25519.PrivateKey, number, slot uint64, prev []byte, txs []*ledgerTx) (*block, error) {
	body := encodeBody(txs)
	bodyHash := body.hash()
	pub := key.Public().(ed25519.PublicKey)
	seed := binary.BigEndian.AppendUint64(nil, slot)
	seed = append(seed, prev...)
	hotVkey := fill("kes-vkey", pub, kesVkeySize)
	// The operational certificate is signed by the issuer's key as a real
	// one is: over the hot key, the counter and the KES period.
	opCertSig := ed25519.Sign(key, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(append([]byte(nil), hotVkey...), 0), 0))
	var prevField any // null: the block follows the origin
	if prev != nil {
		prevField = prev
	}
	headerBody, err := cbor.Encode([]any{
		number,
		slot,
		prevField,
		[]byte(pub),
		fill("vrf-vkey", pub, vrfVkeySize),
		[]any{fill("vrf-output", seed, vrfOutputSize), fill("vrf-proof", seed, vrfProofSize)},
		uint64(body.size()),
		bodyHash[:],
		[]any{hotVkey, uint64(0), uint64(0), opCertSig},
		[]any{uint64(ProtocolMajor), uint64(ProtocolMinor)},
	})
	if err != nil {
		return nil, fmt.Errorf("devnet: encode header of block %d: %w", number, err)
	}
	header, err := cbor.Encode([]any{cbor.RawMessage(headerBody), fill("kes-signature", headerBody, kesSigSize)})
	if err != nil {
		return nil, fmt.Errorf("devnet: encode header of block %d: %w", number, err)
	}
	raw := cborHead(cborArray, 5)
	raw = append(raw, header...)
	raw = append(raw, body.bodies...)
	raw = append(raw, body.witnesses...)
	raw = append(raw, body.aux...)
	raw = append(raw, body.invalid...)
	return &block{number: number, slot: slot, hash: blake2b.Sum256(header), raw: raw, txs: txs}, nil
}
