package node

import (
	"context"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry"
)

// backupUsers is the key registry as the backup store's user lookup: the
// verified device set of a user's current chain.
type backupUsers struct{ keys *keyregistry.Service }

func (u backupUsers) Devices(ctx context.Context, user ident.UserID) (ident.DeviceSet, error) {
	c, err := u.keys.Lookup(ctx, user)
	if err != nil {
		return ident.DeviceSet{}, err
	}
	return c.Set, nil
}
