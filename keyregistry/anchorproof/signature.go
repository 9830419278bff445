package anchorproof

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/chain"
)

// DomainAnchor is the signature domain of a publisher's signature over an
// anchor: the node signs DomainAnchor || 0x00 || chain.EncodeAnchorMetadata
// of the anchor as published, with its libp2p peer key.
const DomainAnchor = "volo/v1/anchor"

// anchorMessage is what a publisher signs for anchor a.
func anchorMessage(a chain.Anchor) ([]byte, error) {
	md, err := chain.EncodeAnchorMetadata(a)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(DomainAnchor), 0), md...), nil
}

// SignAnchor signs a, as published, with a node's peer key.
func SignAnchor(key crypto.PrivKey, a chain.Anchor) ([]byte, error) {
	msg, err := anchorMessage(a)
	if err != nil {
		return nil, fmt.Errorf("anchorproof: sign anchor: %w", err)
	}
	sig, err := key.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("anchorproof: sign anchor: %w", err)
	}
	return sig, nil
}

// ErrBadAnchorSignature reports a publisher signature that does not verify
// against the peer ID named in the anchor.
var ErrBadAnchorSignature = errors.New("anchorproof: publisher signature does not verify")

// VerifyAnchorSignature checks sig over a against the peer ID a.Node names.
func VerifyAnchorSignature(a chain.Anchor, sig []byte) error {
	id, err := peer.IDFromBytes(a.Node)
	if err != nil {
		return fmt.Errorf("%w: anchor names no peer ID: %v", ErrBadAnchorSignature, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: peer ID %s does not hold its public key: %v", ErrBadAnchorSignature, id, err)
	}
	msg, err := anchorMessage(a)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadAnchorSignature, err)
	}
	ok, err := pub.Verify(msg, sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: by %s", ErrBadAnchorSignature, id)
	}
	return nil
}
