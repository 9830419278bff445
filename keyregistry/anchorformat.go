package keyregistry

import (
	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// The anchor formats live in package anchorproof. These names stay here
// for the callers that reach batches and proofs through the registry (the
// HTTP API); they are the anchorproof ones, not copies.

// ErrBadBatch is anchorproof.ErrBadBatch.
var ErrBadBatch = anchorproof.ErrBadBatch

// DecodeAnchorProof is anchorproof.DecodeAnchorProof.
func DecodeAnchorProof(data []byte) (anchorproof.AnchorProof, error) {
	return anchorproof.DecodeAnchorProof(data)
}

// ParseBatchCID is anchorproof.ParseBatchCID.
func ParseBatchCID(b []byte) (cid.Cid, error) { return anchorproof.ParseBatchCID(b) }

// BatchCID is anchorproof.BatchCID.
func BatchCID(encoded []byte) cid.Cid { return anchorproof.BatchCID(encoded) }
