package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/store"
)

// ErrBatchNotFound reports a batch this node does not hold.
var ErrBatchNotFound = errors.New("keyregistry: batch not found")

// Store layout of batches and proofs inside the registry's view.
const (
	batchPrefix = "/batch/"
	proofPrefix = "/proof/"
)

func batchKey(c cid.Cid) []byte { return []byte(batchPrefix + c.String()) }

func proofKey(user ident.UserID, link ident.LinkID) []byte {
	return []byte(proofPrefix + user.String() + "/" + link.String())
}

// storedProof is the value under a proof key: the proof and the peer ID
// of the node that published its anchor.
type storedProof struct {
	Proof []byte `cbor:"1,keyasint"`
	Node  []byte `cbor:"2,keyasint"`
}

// proofSource is how far the node vouches for the anchor of proofs it
// stores; it decides whether they replace stored ones.
type proofSource int

const (
	// proofTrusted: signed by a trusted publisher, not checked on a chain.
	proofTrusted proofSource = iota
	// proofChecked: checked on this node's chain reader.
	proofChecked
	// proofOwn: this node's own anchor.
	proofOwn
)

// storeProofs stores batch raw and, for each of its leaves, the proof under
// announcement a. A proof already stored is replaced when the new one is
// for the same batch by the same publisher (a re-anchor after a rollback),
// when it is this node's own, or when it was checked on the chain and
// names an earlier block (the first anchor of a link wins). It returns the
// number of proofs written.
func (s *Service) storeProofs(raw []byte, b anchorproof.Batch, t *anchorproof.Tree, a Announcement, source proofSource) (int, error) {
	c, _ := cid.Cast(a.anchor.BatchCID)
	ctx := context.Background()
	wb, _ := s.d.Batch(ctx) // a badger write batch: split as large batches need, and idempotent
	if err := wb.Put(ctx, ds.NewKey(string(batchKey(c))), raw); err != nil {
		return 0, fmt.Errorf("keyregistry: store batch: %w", err)
	}
	n := 0
	for i, leaf := range b.Leaves {
		user, err := ident.UserIDFromBytes(leaf.User)
		if err != nil {
			continue // anchorproof.DecodeBatch checked it
		}
		link, err := ident.DecodeLink(leaf.Link)
		if err != nil {
			s.log.Debug("batch holds a link that does not decode; no proof stored for it", "batch", c.String(), "leaf", i, "err", err)
			continue
		}
		key := proofKey(user, link.ID())
		if old, err := s.db.Get(key); err == nil && source != proofOwn {
			var sp storedProof
			if recDec.Unmarshal(old, &sp) == nil {
				op, err := anchorproof.DecodeAnchorProof(sp.Proof)
				same := err == nil && bytes.Equal(op.BatchCID, a.anchor.BatchCID) && bytes.Equal(sp.Node, a.anchor.Node)
				earlier := err == nil && source == proofChecked && a.BlockNo < op.BlockNo
				if !same && !earlier {
					continue
				}
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, fmt.Errorf("keyregistry: read proof: %w", err)
		}
		p, err := a.proofFor(t, uint64(i))
		if err != nil {
			return n, err
		}
		v, err := recEnc.Marshal(storedProof{Proof: p.Encode(), Node: a.anchor.Node})
		if err != nil {
			return n, err
		}
		if err := wb.Put(ctx, ds.NewKey(string(key)), v); err != nil {
			return n, fmt.Errorf("keyregistry: store proof: %w", err)
		}
		n++
	}
	if err := wb.Commit(ctx); err != nil {
		return 0, fmt.Errorf("keyregistry: store proofs: %w", err)
	}
	s.am.lastBlock.Set(float64(a.BlockNo))
	return n, nil
}

// Batch returns the stored batch c (its encoding), or ErrBatchNotFound.
func (s *Service) Batch(c cid.Cid) ([]byte, error) {
	v, err := s.db.Get(batchKey(c))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrBatchNotFound, c)
	}
	if err != nil {
		return nil, fmt.Errorf("keyregistry: read batch: %w", err)
	}
	return v, nil
}

// Proofs returns the stored anchor proof (its encoding) of each link of
// user's chain, nil for the links that have none yet.
func (s *Service) Proofs(user ident.UserID, links [][]byte) ([][]byte, error) {
	out := make([][]byte, len(links))
	for i, enc := range links {
		l, err := ident.DecodeLink(enc)
		if err != nil {
			return nil, fmt.Errorf("keyregistry: link %d: %w", i, err)
		}
		v, err := s.db.Get(proofKey(user, l.ID()))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keyregistry: read proof: %w", err)
		}
		var sp storedProof
		if err := recDec.Unmarshal(v, &sp); err != nil {
			return nil, fmt.Errorf("keyregistry: stored proof of link %d: %w", i, err)
		}
		out[i] = sp.Proof
	}
	return out, nil
}

// LinkProof returns the stored proof of one link of user, decoded.
func (s *Service) LinkProof(user ident.UserID, link ident.LinkID) (anchorproof.AnchorProof, bool, error) {
	v, err := s.db.Get(proofKey(user, link))
	if errors.Is(err, store.ErrNotFound) {
		return anchorproof.AnchorProof{}, false, nil
	}
	if err != nil {
		return anchorproof.AnchorProof{}, false, fmt.Errorf("keyregistry: read proof: %w", err)
	}
	var sp storedProof
	if err := recDec.Unmarshal(v, &sp); err != nil {
		return anchorproof.AnchorProof{}, false, fmt.Errorf("keyregistry: stored proof: %w", err)
	}
	p, err := anchorproof.DecodeAnchorProof(sp.Proof)
	return p, err == nil, err
}

// anchoredAt is the fork rule's view (ident.ResolveFork) of the anchor
// proofs this node holds for user's links: the block number of each
// stored proof. Stored proofs were checked when they were stored (batch
// root, publisher signature, and the transaction in its block when the
// node has a chain reader: docs/anchoring.md).
func (s *Service) anchoredAt(user ident.UserID) ident.AnchoredAt {
	return func(link ident.LinkID) (uint64, bool) {
		p, ok, err := s.LinkProof(user, link)
		if err != nil || !ok {
			return 0, false
		}
		return p.BlockNo, true
	}
}
