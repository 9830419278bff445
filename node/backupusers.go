package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry"
)

// backupUsers is the key registry as the backup store's user lookup: the
// verified device set of a user's current chain.
type backupUsers struct{ keys *keyregistry.Service }

func (u backupUsers) Devices(ctx context.Context, user ident.UserID) (ident.DeviceSet, error) {
	c, err := u.keys.Lookup(ctx, user)
	if errors.Is(err, keyregistry.ErrUserNotFound) {
		return ident.DeviceSet{}, fmt.Errorf("%w: %w", backupstore.ErrUnknownUser, err)
	}
	if err != nil {
		return ident.DeviceSet{}, err
	}
	return c.Set, nil
}

func (u backupUsers) StoredDevices(ctx context.Context, user ident.UserID) (ident.DeviceSet, bool) {
	c, err := u.keys.Stored(ctx, user)
	if err != nil {
		return ident.DeviceSet{}, false
	}
	return c.Set, true
}
