package anchorproof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/ident"
)

// LinkVerdict is what the verifier found for one link of a user chain.
type LinkVerdict struct {
	Index     int    `json:"index"` // position in the chain, 0 = genesis
	Kind      string `json:"kind"`
	LinkID    string `json:"link_id"`
	Device    string `json:"device"` // the device the link adds or revokes
	Anchored  bool   `json:"anchored"`
	Depth     uint64 `json:"depth,omitempty"`
	TxID      string `json:"tx_id,omitempty"`
	Block     string `json:"block,omitempty"` // slot.hash
	BlockNo   uint64 `json:"block_no,omitempty"`
	BatchCID  string `json:"batch_cid,omitempty"`
	Publisher string `json:"publisher,omitempty"` // peer ID of the node that anchored it
	// Reason says why the link is not anchored at the required depth;
	// empty when it is.
	Reason string `json:"reason,omitempty"`
}

// DeviceVerdict is what the verifier found for one device of a user: a
// device is anchored when the link that added it is, and, if it was
// revoked, the link that revoked it too.
type DeviceVerdict struct {
	Device   string `json:"device"`
	Revoked  bool   `json:"revoked"`
	Anchored bool   `json:"anchored"`
	Reason   string `json:"reason,omitempty"`
}

// Verdict is the verifier's answer for one user.
type Verdict struct {
	User     string `json:"user"`
	MinDepth uint64 `json:"min_depth"`
	TipBlock uint64 `json:"tip_block_no"`
	// ChainError is set when the chain does not verify from the user ID;
	// nothing else is checked then.
	ChainError string          `json:"chain_error,omitempty"`
	Links      []LinkVerdict   `json:"links"`
	Devices    []DeviceVerdict `json:"devices"`
	// OK is true when the chain verifies and every link is anchored at
	// MinDepth or deeper.
	OK bool `json:"ok"`
}

// VerifyAnchors verifies user's chain (links, genesis first) from the user
// ID, then each link's anchor proof (proofs[i] for links[i], nil when it
// has none) against the chain r reads: the proof's block is fetched, the
// transaction found by its ID, its anchor read from its metadata, the
// root, tree size and batch CID compared with the proof, the inclusion
// proof of the link's leaf checked against the anchored root, the
// publisher's signature checked against the peer ID in the anchor, the
// transaction's signers required, and the block's depth compared with
// minDepth. The error is only for a chain that cannot be read at all.
func VerifyAnchors(ctx context.Context, user ident.UserID, links, proofs [][]byte, r chain.Reader, minDepth uint64) (Verdict, error) {
	v := Verdict{User: user.String(), MinDepth: minDepth, Links: []LinkVerdict{}, Devices: []DeviceVerdict{}}
	_, decoded, err := ident.DecodeChain(user, links)
	if err != nil {
		v.ChainError = err.Error()
		return v, nil
	}
	if len(proofs) != len(links) {
		v.ChainError = fmt.Sprintf("%d proofs for %d links", len(proofs), len(links))
		return v, nil
	}
	tip, err := r.Tip(ctx)
	if err != nil {
		return v, fmt.Errorf("anchorproof: verify: chain tip: %w", err)
	}
	v.TipBlock = tip.BlockNo
	blocks := make(map[string]*chain.Block)
	blockErrs := make(map[string]error)
	fetch := func(p, prev chain.Point) (*chain.Block, error) {
		k := string(p.Hash)
		if b, ok := blocks[k]; ok {
			return b, blockErrs[k]
		}
		b, err := r.Block(ctx, p, prev)
		blocks[k], blockErrs[k] = b, err
		return b, err
	}
	v.OK = true
	for i, l := range decoded {
		lv := LinkVerdict{Index: i, Kind: l.Kind.String(), LinkID: l.ID().String()}
		switch l.Kind {
		case ident.LinkRevokeDevice:
			lv.Device = l.Revoked.String()
		default:
			lv.Device = l.Device.ID().String()
		}
		verifyLink(user, links[i], proofs[i], fetch, tip, minDepth, &lv)
		lv.Anchored = lv.Reason == ""
		v.OK = v.OK && lv.Anchored
		v.Links = append(v.Links, lv)
	}
	v.Devices = deviceVerdicts(v.Links)
	return v, nil
}

// verifyLink fills lv for one link and its proof; it leaves lv.Reason
// empty when every check passes.
func verifyLink(user ident.UserID, link, rawProof []byte, fetch func(p, prev chain.Point) (*chain.Block, error),
	tip chain.Tip, minDepth uint64, lv *LinkVerdict) {
	if rawProof == nil {
		lv.Reason = "never anchored: there is no anchor proof for this link (it was accepted after the last anchored batch, or its batch is still waiting for confirmations)"
		return
	}
	p, err := DecodeAnchorProof(rawProof)
	if err != nil {
		lv.Reason = "the anchor proof is malformed: " + err.Error()
		return
	}
	txID, at, prev := p.Inclusion()
	lv.TxID, lv.Block, lv.BlockNo = txID.String(), at.String(), p.BlockNo
	if c, err := cid.Cast(p.BatchCID); err == nil {
		lv.BatchCID = c.String()
	}
	blk, err := fetch(at, prev)
	switch {
	case errors.Is(err, chain.ErrNotFound):
		lv.Reason = fmt.Sprintf("block %s named by the proof is not on the chain (never was, or was rolled back): the node must anchor the link again", at)
		return
	case err != nil:
		lv.Reason = fmt.Sprintf("could not read block %s from the Cardano node: %v", at, err)
		return
	}
	if blk.Point.Slot != at.Slot || !bytes.Equal(blk.Point.Hash, at.Hash) {
		lv.Reason = fmt.Sprintf("the proof names block %s, the Cardano node has block %s there", at, blk.Point)
		return
	}
	if blk.BlockNo != p.BlockNo {
		lv.Reason = fmt.Sprintf("the proof says block number %d, the block at %s is number %d", p.BlockNo, at, blk.BlockNo)
		return
	}
	i := slices.IndexFunc(blk.Txs, func(tx chain.Tx) bool { return tx.ID == txID })
	if i < 0 {
		lv.Reason = fmt.Sprintf("transaction %s named by the proof is not in block %s", txID, at)
		return
	}
	tx := blk.Txs[i]
	if tx.Anchor == nil {
		lv.Reason = fmt.Sprintf("transaction %s carries no Volo anchor (metadata label %d missing, malformed, or not matching its auxiliary data hash)", txID, chain.MetadataLabel)
		return
	}
	an := *tx.Anchor
	if id, err := peer.IDFromBytes(an.Node); err == nil {
		lv.Publisher = id.String()
	}
	switch {
	case !bytes.Equal(p.Root, an.Root[:]):
		lv.Reason = fmt.Sprintf("the proof claims root %x but transaction %s anchors root %x", p.Root, txID, an.Root)
		return
	case p.TreeSize != an.TreeSize:
		lv.Reason = fmt.Sprintf("the proof claims a batch of %d links but the anchor says %d", p.TreeSize, an.TreeSize)
		return
	case !bytes.Equal(p.BatchCID, an.BatchCID):
		lv.Reason = "the proof names another batch CID than the anchor"
		return
	}
	leaf := NewLeaf(user, link).Hash()
	if err := VerifyInclusion(p.LeafIndex, p.TreeSize, leaf, p.Path, an.Root); err != nil {
		lv.Reason = fmt.Sprintf("the inclusion proof of leaf %d does not lead from this link to the anchored root: %v", p.LeafIndex, err)
		return
	}
	if err := VerifyAnchorSignature(an, p.Sig); err != nil {
		lv.Reason = "the publisher's signature over the anchor does not verify against the peer ID in the anchor: " + err.Error()
		return
	}
	if len(tx.Signers) == 0 {
		lv.Reason = fmt.Sprintf("transaction %s has no verified signature", txID)
		return
	}
	lv.Depth = chain.Depth(blk.BlockNo, tip)
	if lv.Depth < minDepth {
		lv.Reason = fmt.Sprintf("anchored in block %d at depth %d, less than the required %d: wait for %d more blocks", blk.BlockNo, lv.Depth, minDepth, minDepth-lv.Depth)
	}
}

// deviceVerdicts folds link verdicts into one verdict per device, in the
// order the devices were added.
func deviceVerdicts(links []LinkVerdict) []DeviceVerdict {
	var out []DeviceVerdict
	at := make(map[string]int)
	for _, l := range links {
		switch l.Kind {
		case ident.LinkRevokeDevice.String():
			i, ok := at[l.Device]
			if !ok {
				continue // DecodeChain refuses a revoke of an unknown device
			}
			out[i].Revoked = true
			if !l.Anchored {
				out[i].Anchored = false
				out[i].Reason = joinReason(out[i].Reason, fmt.Sprintf("revocation (link %d) not anchored: %s", l.Index, l.Reason))
			}
		default:
			at[l.Device] = len(out)
			d := DeviceVerdict{Device: l.Device, Anchored: l.Anchored}
			if !l.Anchored {
				d.Reason = fmt.Sprintf("link %d (%s) not anchored: %s", l.Index, l.Kind, l.Reason)
			}
			out = append(out, d)
		}
	}
	return out
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
