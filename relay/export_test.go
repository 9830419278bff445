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
