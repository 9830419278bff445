package node

import (
	"context"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/keyregistry"
)

// backupUsers is the key registry as the backup store's user lookup: the
// verified device set of a user's current chain.
type backupUsers struct{ keys *keyregistry.Service }

func (u backupUsers) Devices(ctx context.Context, user e2ee.UserID) (e2ee.DeviceSet, error) {
	c, err := u.keys.Lookup(ctx, user)
	if err != nil {
		return e2ee.DeviceSet{}, err
	}
	return c.Set, nil
}
