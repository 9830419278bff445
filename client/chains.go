package client

import (
	"context"
	"fmt"
	"time"

	"github.com/volo-chat/volo/ident"
)

// cachedChain is a verified device set and when it was fetched.
type cachedChain struct {
	set     ident.DeviceSet
	fetched time.Time
}

// chain returns the verified device set of user, fetched again when older
// than maxAge. This device's own chain must extend the saved one.
func (ch *Chat) chain(ctx context.Context, user ident.UserID, maxAge time.Duration) (ident.DeviceSet, error) {
	ch.mu.Lock()
	cc, ok := ch.chains[user]
	ch.mu.Unlock()
	now := time.Now()
	if ok && now.Sub(cc.fetched) < maxAge {
		return cc.set, nil
	}
	set, links, err := ch.c.fetchChain(ctx, ch.c.api, user)
	if err != nil {
		return ident.DeviceSet{}, err
	}
	if user.Equal(ch.self.User) {
		st, err := ch.c.home.State()
		if err != nil {
			return ident.DeviceSet{}, err
		}
		if _, err := ch.c.acceptOwnChain(st, set, links); err != nil {
			return ident.DeviceSet{}, err
		}
		if _, ok := set.Lookup(ch.self.Device); !ok {
			return ident.DeviceSet{}, fmt.Errorf("%w: %s", ErrDeviceRevoked, ch.self.Device)
		}
	}
	ch.mu.Lock()
	ch.chains[user] = cachedChain{set: set, fetched: now}
	ch.mu.Unlock()
	return set, nil
}
