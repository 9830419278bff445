package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/volo-chat/volo/ident"
)

// ChainConflictError is what a client answers when a node serves a chain
// of a user that is not the chain this device verified before (pinned)
// nor an extension of it: an older chain (a rollback, errors.Is
// ErrChainRollback) or another branch (a fork, errors.Is ErrChainForked).
// Nothing is sent to the user until the node serves the pinned chain or an
// extension of it, or the user accepts the node's chain with AcceptChain,
// which only a winner of the fork rule passes.
type ChainConflictError struct {
	User     ident.UserID
	Relation ident.ChainRelation // ident.ChainRollback or ident.ChainForked
	Pinned   ident.ChainHead     // the head verified before
	Offered  ident.ChainHead     // the head the node serves
}

func (e *ChainConflictError) Error() string {
	what := "a forked"
	if e.Relation == ident.ChainRollback {
		what = "an older"
	}
	return fmt.Sprintf("client: the node serves %s chain of user %s: verified before: version %d, head %s; the node's: version %d, head %s",
		what, e.User, e.Pinned.Version, e.Pinned.Link, e.Offered.Version, e.Offered.Link)
}

// Is makes errors.Is see ErrChainRollback or ErrChainForked.
func (e *ChainConflictError) Is(target error) bool {
	if e.Relation == ident.ChainRollback {
		return target == ErrChainRollback
	}
	return target == ErrChainForked
}

// conflict is the error for a chain offered that neither is nor extends
// the pinned one.
func conflict(pinned, offered ident.DeviceSet) error {
	rel := ident.ChainForked
	if ident.Relate(pinned, offered) == ident.ChainRollback {
		rel = ident.ChainRollback
	}
	return &ChainConflictError{User: pinned.User(), Relation: rel, Pinned: pinned.Head(), Offered: offered.Head()}
}

// ErrChainNotWinner: AcceptChain was asked to accept a node's chain that
// does not win the fork rule over the pinned one.
var ErrChainNotWinner = errors.New("client: the node's chain does not win the fork rule over the chain verified before")

// cachedChain is a verified device set and when it was fetched.
type cachedChain struct {
	set     ident.DeviceSet
	fetched time.Time
}

// chain returns the verified device set of user, fetched again when older
// than maxAge. The chain must be the one this device pinned for the user
// (its own: the one saved in the home) or extend it; an extension is
// pinned. Else the error is a *ChainConflictError.
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
	} else if err := ch.pin(set, links, false); err != nil {
		return ident.DeviceSet{}, err
	}
	ch.mu.Lock()
	ch.chains[user] = cachedChain{set: set, fetched: now}
	ch.mu.Unlock()
	return set, nil
}

// pin pins the verified chain set of another user when the device has
// none pinned, when it extends the pinned one, or when winner is set and
// it wins the fork rule over the pinned one (no anchor counts: a client
// verifies none). It refuses anything else with a *ChainConflictError (or
// ErrChainNotWinner when winner is set). The pin takes effect at once and
// is written with the next record of the chat store (commitLocked), so
// that a store that cannot be written now never costs a message.
func (ch *Chat) pin(set ident.DeviceSet, links []ident.Link, winner bool) error {
	user := set.User()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if old, ok := ch.pinnedLocked(user); ok {
		res := ident.ResolveFork(old.set, set, nil)
		switch {
		case res.Relation == ident.ChainSame:
			return nil
		case res.Relation == ident.ChainExtends:
		case winner && res.Candidate:
		case winner:
			return fmt.Errorf("%w: %w", ErrChainNotWinner, conflict(old.set, set))
		default:
			return conflict(old.set, set)
		}
	}
	ch.unpinned[user] = pin{set: set, links: encodeLinks(links)}
	return nil
}

// pinnedLocked returns the chain pinned for user, written or not yet.
// ch.mu is held.
func (ch *Chat) pinnedLocked(user ident.UserID) (pin, bool) {
	if p, ok := ch.unpinned[user]; ok {
		return p, true
	}
	p, ok := ch.st.pins[user]
	return p, ok
}

// AcceptChain resolves a conflict (ChainConflictError) over user's chain
// in favour of the chain the node serves now, when it wins the fork rule
// (ident.ResolveFork) over the chain this device pinned: for instance
// when the user's recovery key revoked a stolen device on the other
// branch. It pins it and returns its head. A rollback or a losing branch
// is refused with ErrChainNotWinner; sending stays stopped. For this
// device's own user, the saved chain is replaced the same way.
func (ch *Chat) AcceptChain(ctx context.Context, user ident.UserID) (ident.ChainHead, error) {
	set, links, err := ch.c.fetchChain(ctx, ch.c.api, user)
	if err != nil {
		return ident.ChainHead{}, err
	}
	if user.Equal(ch.self.User) {
		st, err := ch.c.home.State()
		if err != nil {
			return ident.ChainHead{}, err
		}
		known, _, err := savedChain(st)
		if err != nil {
			return ident.ChainHead{}, err
		}
		if res := ident.ResolveFork(known, set, nil); !res.Candidate && res.Relation != ident.ChainSame {
			return ident.ChainHead{}, fmt.Errorf("%w: %w", ErrChainNotWinner, conflict(known, set))
		}
		st.Chain = encodeLinks(links)
		if err := ch.c.home.SaveState(st); err != nil {
			return ident.ChainHead{}, err
		}
	} else {
		if err := ch.pin(set, links, true); err != nil {
			return ident.ChainHead{}, err
		}
		// Written at once: the user decided.
		ch.mu.Lock()
		err := ch.commitLocked(chatRecord{})
		ch.mu.Unlock()
		if err != nil {
			return ident.ChainHead{}, err
		}
	}
	ch.mu.Lock()
	ch.chains[user] = cachedChain{set: set, fetched: time.Now()}
	ch.mu.Unlock()
	return set.Head(), nil
}
