package keyregistry

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/wire"
)

// AnchorTopic is the gossipsub topic on which nodes announce the anchors
// they published. Each message is one Announcement.
const AnchorTopic = "/volo/anchors/1"

// Limits of anchor announcements.
const (
	// AnnouncementVersion is the version of the announcement encoding.
	AnnouncementVersion = 1
	// MaxAnnouncementSize bounds a gossiped announcement.
	MaxAnnouncementSize = 2048
)

// ErrBadAnnouncement reports an announcement that does not decode, breaks
// a limit or whose publisher signature does not verify.
var ErrBadAnnouncement = errors.New("keyregistry: bad anchor announcement")

// Announcement says that a node's anchor was included on the chain: the
// anchor's metadata as published, the publisher's signature over it, and
// where the transaction is. Deterministic CBOR with integer keys.
type Announcement struct {
	V        uint64               `cbor:"1,keyasint"`
	Metadata []byte               `cbor:"2,keyasint"` // chain.EncodeAnchorMetadata of the anchor
	Sig      []byte               `cbor:"3,keyasint"` // publisher's signature (DomainAnchor)
	TxID     []byte               `cbor:"4,keyasint"`
	Block    anchorproof.BlockRef `cbor:"5,keyasint"`
	Prev     anchorproof.BlockRef `cbor:"6,keyasint"`
	BlockNo  uint64               `cbor:"7,keyasint"`

	anchor chain.Anchor // decoded Metadata, set by DecodeAnnouncement and announce
}

var annDec = wire.StrictDecMode(16)

// Anchor is the anchor the announcement carries.
func (a Announcement) Anchor() chain.Anchor { return a.anchor }

// Encode returns the announcement's canonical encoding.
func (a Announcement) Encode() []byte {
	b, err := recEnc.Marshal(a)
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode announcement: %v", err))
	}
	return b
}

// newAnnouncement is the announcement of inc, signed with sig.
func newAnnouncement(inc chain.Inclusion, sig []byte) (Announcement, error) {
	md, err := chain.EncodeAnchorMetadata(inc.Anchor)
	if err != nil {
		return Announcement{}, err
	}
	return Announcement{V: AnnouncementVersion, Metadata: md, Sig: sig, TxID: bytes.Clone(inc.TxID[:]),
		Block: anchorproof.BlockRefOf(inc.Block), Prev: anchorproof.BlockRefOf(inc.Prev), BlockNo: inc.BlockNo, anchor: inc.Anchor}, nil
}

// DecodeAnnouncement decodes an announcement and checks it: limits, the
// anchor metadata, a batch CID of the kind Volo writes, and the
// publisher's signature against the peer ID in the metadata.
func DecodeAnnouncement(data []byte) (Announcement, error) {
	if len(data) > MaxAnnouncementSize {
		return Announcement{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadAnnouncement, len(data), MaxAnnouncementSize)
	}
	var a Announcement
	if err := annDec.Unmarshal(data, &a); err != nil {
		return Announcement{}, fmt.Errorf("%w: %v", ErrBadAnnouncement, err)
	}
	if !bytes.Equal(a.Encode(), data) {
		return Announcement{}, fmt.Errorf("%w: not canonical", ErrBadAnnouncement)
	}
	switch {
	case a.V != AnnouncementVersion:
		return Announcement{}, fmt.Errorf("%w: version %d", ErrBadAnnouncement, a.V)
	case len(a.TxID) != 32 || len(a.Block.Hash) != 32 || (len(a.Prev.Hash) != 0 && len(a.Prev.Hash) != 32) || a.BlockNo == 0:
		return Announcement{}, fmt.Errorf("%w: bad transaction ID or block point", ErrBadAnnouncement)
	case len(a.Sig) == 0 || len(a.Sig) > anchorproof.MaxSignatureSize:
		return Announcement{}, fmt.Errorf("%w: signature of %d bytes", ErrBadAnnouncement, len(a.Sig))
	}
	an, err := chain.DecodeAnchorMetadata(a.Metadata)
	if err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	if an.TreeSize > anchorproof.MaxBatchLinks {
		return Announcement{}, fmt.Errorf("%w: tree of %d leaves, limit %d", ErrBadAnnouncement, an.TreeSize, anchorproof.MaxBatchLinks)
	}
	if _, err := anchorproof.ParseBatchCID(an.BatchCID); err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	if err := anchorproof.VerifyAnchorSignature(an, a.Sig); err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	a.anchor = an
	return a, nil
}

// Inclusion is where the announcement says the anchor landed.
func (a Announcement) Inclusion() chain.Inclusion {
	inc := chain.Inclusion{Anchor: a.anchor, Block: a.Block.Point(), Prev: a.Prev.Point(), BlockNo: a.BlockNo}
	copy(inc.TxID[:], a.TxID)
	return inc
}

// proofFor is the anchor proof of leaf i of tree t under announcement a.
func (a Announcement) proofFor(t *anchorproof.Tree, i uint64) (anchorproof.AnchorProof, error) {
	return anchorproof.ForLeaf(t, i, a.Inclusion(), a.Sig)
}
