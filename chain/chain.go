// Package chain is what the rest of Volo knows of the blockchain that
// anchors key registrations: anchor a Merkle root and learn where it was
// included, read a block by its point, follow the tip. chain/cardano is the
// real backend (gouroboros); chain/devnet is an embedded Cardano node for
// development and tests that chain/cardano talks to unchanged.
package chain

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
)

// MetadataLabel is the transaction metadata label of Volo anchors:
// "VOLO" in ASCII, read as a big-endian integer.
const MetadataLabel = 1448037455

// AnchorVersion is the version of the anchor metadata this code writes.
const AnchorVersion = 1

// ErrNotFound is returned by Reader.Block when the block is not on the
// node's current chain (never was, or was rolled back).
var ErrNotFound = errors.New("chain: block not on the chain")

// Point names a block: its slot and its header hash. The zero Point is
// the origin of the chain (before the first block).
type Point struct {
	Slot uint64
	Hash []byte // 32 bytes; empty for the origin
}

// IsOrigin reports whether p is the origin.
func (p Point) IsOrigin() bool { return p.Slot == 0 && len(p.Hash) == 0 }

func (p Point) String() string {
	if p.IsOrigin() {
		return "origin"
	}
	return fmt.Sprintf("%d.%x", p.Slot, p.Hash)
}

// TxID is a transaction's ID: the Blake2b-256 hash of its encoded body.
type TxID [32]byte

func (id TxID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zero bytes.
func (id TxID) IsZero() bool { return id == TxID{} }

// Anchor is what one anchor transaction carries under MetadataLabel: the
// root of a batch's Merkle tree and where the batch can be found.
type Anchor struct {
	Version  uint64   // AnchorVersion
	Root     [32]byte // RFC 6962 Merkle tree head over the batch's leaves
	TreeSize uint64   // leaves in the batch
	Seq      uint64   // the publishing node's anchor number, from 1
	Prev     TxID     // the transaction this one spends (the publisher's previous anchor, or its funding); set by the Anchorer
	BatchCID []byte   // CID (binary form) of the batch's leaves
	Node     []byte   // the publishing node's libp2p peer ID (binary form)
}

// Tip is the newest block of a chain.
type Tip struct {
	Point   Point
	BlockNo uint64
}

// Inclusion says where an anchor transaction landed.
type Inclusion struct {
	Anchor  Anchor // as published (Prev filled in)
	TxID    TxID
	Block   Point  // the block holding the transaction
	Prev    Point  // the block before it (node-to-client readers start there)
	BlockNo uint64 // the block's number
}

// Depth is the number of blocks from b to tip, b included: a block that is
// the tip has depth 1. It is 0 when tip is older than b.
func Depth(blockNo uint64, tip Tip) uint64 {
	if tip.BlockNo < blockNo {
		return 0
	}
	return tip.BlockNo - blockNo + 1
}

// Anchorer publishes anchors.
type Anchorer interface {
	// Anchor submits one transaction carrying a (Prev is set by the
	// Anchorer), follows the chain until the transaction is in a block at
	// least depth deep, resubmitting it after a rollback, and returns where
	// it is. A transaction the node refuses is an error carrying the node's
	// reason.
	Anchor(ctx context.Context, a Anchor, depth uint64) (Inclusion, error)
}

// Tx is one transaction of a Block, as a verifier needs it.
type Tx struct {
	ID TxID
	// Anchor is the Volo anchor in the transaction's metadata, nil when it
	// has none or it does not decode. A Reader sets it only after checking
	// the body's auxiliary data hash against the metadata it decoded.
	Anchor *Anchor
	// Signers are the Ed25519 public keys of the transaction's vkey
	// witnesses whose signatures over the body hash verify.
	Signers [][]byte
}

// Block is a block as a Reader returns it.
type Block struct {
	Point   Point
	BlockNo uint64
	Txs     []Tx
}

// Event is one change of the chain a Follow sees.
type Event struct {
	// Rollback is true when the chain rolled back to Point; otherwise
	// Point is a new block, BlockNo its number.
	Rollback bool
	Point    Point
	BlockNo  uint64
	Tip      Tip
}

// Reader reads a chain, trusting only what it can check itself.
type Reader interface {
	// Tip returns the newest block of the chain.
	Tip(ctx context.Context) (Tip, error)
	// Block fetches the block at p; prev is the point of the block before
	// it (readers that can only read forward from a point start there).
	// ErrNotFound when p is not on the chain.
	Block(ctx context.Context, p, prev Point) (*Block, error)
	// Follow calls fn for every block after the newest of from that is on
	// the chain (from the origin when from is empty) and every rollback,
	// until ctx ends or fn returns an error.
	Follow(ctx context.Context, from []Point, fn func(Event) error) error
	// Close ends the reader's connection.
	Close() error
}
