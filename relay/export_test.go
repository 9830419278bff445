package relay

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// AckOnRelay sends an ack straight to relay p, skipping this node's own
// check of the signature: what a forging node would do.
func (s *Service) AckOnRelay(ctx context.Context, p peer.ID, dev ident.DevicePublic, ids []EnvelopeID, sig []byte) (int, error) {
	r, err := s.roundTrip(ctx, p, ackFrame(dev, ids, sig), msgAckResult)
	return int(r.Deleted), err
}

// StoreOnRelay sends a store request straight to relay p, as any libp2p
// peer can, and returns the relay's result for each envelope.
func (s *Service) StoreOnRelay(ctx context.Context, p peer.ID, envs []Envelope) []error {
	return s.storeRemote(ctx, p, msgStore, ident.DeviceID{}, envs)
}
