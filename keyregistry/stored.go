package keyregistry

import (
	"context"

	"github.com/volo-chat/volo/ident"
)

// Stored returns user's chain as this node holds it, with no network
// lookup: ErrUserNotFound when the node holds none. Record validators,
// which must not wait on the network, judge records by it.
func (s *Service) Stored(ctx context.Context, user ident.UserID) (Chain, error) {
	return s.local(ctx, user)
}
