package relay

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// AckOnRelay sends an ack straight to relay p, skipping this node's own
// check of the signature: what a forging node would do.
func (s *Service) AckOnRelay(ctx context.Context, p peer.ID, dev ident.DevicePublic, refs []wire.EnvelopeRef, sig []byte) (int, error) {
	r, err := s.roundTrip(ctx, p, ackFrame(dev, refs, sig), msgAckResult)
	return int(r.Deleted), err
}

// StoreOnRelay sends a store request straight to relay p, as any libp2p
// peer can, and returns the relay's result for each envelope.
func (s *Service) StoreOnRelay(ctx context.Context, p peer.ID, envs []Envelope) []error {
	return s.storeRemote(ctx, p, msgStore, ident.DeviceID{}, envs, nil)
}
