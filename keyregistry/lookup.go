package keyregistry

import (
	"context"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"

	"github.com/volo-chat/volo/ident"
)

// ErrUserNotFound reports a user neither the store nor the DHT has.
var ErrUserNotFound = errors.New("keyregistry: user not found")

// Store layout inside the registry's view.
func chainKey(user ident.UserID) ds.Key { return ds.NewKey("/chain/" + user.String()) }
func forkKey(user ident.UserID) ds.Key  { return ds.NewKey("/fork/" + user.String()) }
func accountKey(a Account) ds.Key       { return ds.NewKey("/account/" + a.key()) }

const chainPrefix = "/chain/"

// Lookup returns user's chain from the store, or else from the DHT
// (verified, then kept in the store).
func (s *Service) Lookup(ctx context.Context, user ident.UserID) (Chain, error) {
	c, err := s.local(ctx, user)
	if err == nil {
		s.m.lookups.WithLabelValues("store").Inc()
		return c, nil
	}
	if !errors.Is(err, ErrUserNotFound) {
		return Chain{}, err
	}
	c, err = s.fetch(ctx, user)
	if err != nil {
		return Chain{}, err
	}
	if err := s.keep(ctx, c); err != nil {
		return Chain{}, err
	}
	s.m.lookups.WithLabelValues("dht").Inc()
	return c, nil
}

// local reads user's chain from the store.
func (s *Service) local(ctx context.Context, user ident.UserID) (Chain, error) {
	v, err := s.d.Get(ctx, chainKey(user))
	if errors.Is(err, ds.ErrNotFound) {
		return Chain{}, fmt.Errorf("%w: %s", ErrUserNotFound, user)
	}
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	// Verified before it was stored; verified again, as every read of a
	// chain is, so that a damaged store cannot serve a bad chain — unless
	// these exact bytes were verified before (the cache is keyed by their
	// hash, so damaged bytes miss it).
	return s.verified.decode(v, user)
}

// holds reports whether the store has a chain of user (an error counts
// as no).
func (s *Service) holds(user ident.UserID) bool {
	ok, err := s.d.Has(context.Background(), chainKey(user))
	return err == nil && ok
}

// save writes c to the store.
func (s *Service) save(ctx context.Context, c Chain) error {
	if err := s.d.Put(ctx, chainKey(c.Set.User()), c.Record().Encode()); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	return nil
}

// keep stores c if the node has no chain of its user, c extends it, or
// c wins a fork with it (ident.ResolveFork).
func (s *Service) keep(ctx context.Context, c Chain) error {
	_, _, err := s.consider(ctx, c)
	return err
}

// consider applies the fork rule to c and the chain the node holds: it
// stores c when it is new to the node, extends its chain or wins a fork
// with it. At a fork, the losing branch is remembered (Fork). It returns
// how c related to the chain the node held, whether c was kept, and the
// chain the node holds now.
func (s *Service) consider(ctx context.Context, c Chain) (ident.Resolution, Chain, error) {
	user := c.Set.User()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.local(ctx, user)
	switch {
	case errors.Is(err, ErrUserNotFound):
		return ident.Resolution{Relation: ident.ChainExtends, Candidate: true}, c, s.save(ctx, c)
	case err != nil:
		return ident.Resolution{}, Chain{}, err
	}
	res := ident.ResolveFork(cur.Set, c.Set, s.anchoredAt(user))
	switch {
	case res.Relation == ident.ChainForked && res.Candidate:
		return res, c, s.saveFork(ctx, c, cur)
	case res.Relation == ident.ChainForked:
		return res, cur, s.saveFork(ctx, cur, c)
	case res.Candidate:
		return res, c, s.save(ctx, c)
	}
	return res, cur, nil
}

// saveFork stores winner as the user's chain and loser as the other
// branch of its known fork, in one transaction.
func (s *Service) saveFork(ctx context.Context, winner, loser Chain) error {
	user := winner.Set.User()
	b, err := s.d.Batch(ctx)
	if err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	if err := b.Put(ctx, chainKey(user), winner.Record().Encode()); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	if err := b.Put(ctx, forkKey(user), loser.Record().Encode()); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	if err := b.Commit(ctx); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	s.m.forks.Inc()
	s.log.Warn("a user's chain is forked", "user", user.String(),
		"kept_version", winner.Version(), "kept_head", winner.Set.Head().Link.String(),
		"other_version", loser.Version(), "other_head", loser.Set.Head().Link.String())
	return nil
}

// Fork is a fork of a user's chain the node knows: the chain it keeps
// (and serves) and the head of the other branch it saw last.
type Fork struct {
	At    uint64          // sequence number of the first link that differs
	Rule  ident.ForkRule  // the step of the fork rule that decided
	Kept  ident.ChainHead // head of the chain the node serves
	Other ident.ChainHead // head of the losing branch
}

// Fork returns the known fork of user's chain, if the node has seen one.
// Both branches are read from the store and verified again, and the rule
// is applied again with the anchor proofs the node holds now: a branch
// whose divergent link turned out to be anchored first takes over.
func (s *Service) Fork(ctx context.Context, user ident.UserID) (Fork, bool, error) {
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	kept, other, ok, err := s.forkBranches(ctx, user)
	if err != nil || !ok {
		return Fork{}, false, err
	}
	res := ident.ResolveFork(kept.Set, other.Set, s.anchoredAt(user))
	if res.Relation != ident.ChainForked {
		return Fork{}, false, nil
	}
	if res.Candidate {
		if err := s.saveFork(ctx, other, kept); err != nil {
			return Fork{}, false, err
		}
		kept, other = other, kept
	}
	return Fork{At: res.At, Rule: res.Rule, Kept: kept.Set.Head(), Other: other.Set.Head()}, true, nil
}

// forkBranches reads the user's chain and the other branch of its fork.
func (s *Service) forkBranches(ctx context.Context, user ident.UserID) (kept, other Chain, ok bool, err error) {
	v, err := s.d.Get(ctx, forkKey(user))
	if errors.Is(err, ds.ErrNotFound) {
		return Chain{}, Chain{}, false, nil
	}
	if err != nil {
		return Chain{}, Chain{}, false, fmt.Errorf("keyregistry: store: %w", err)
	}
	if other, err = s.verified.decode(v, user); err != nil {
		return Chain{}, Chain{}, false, err
	}
	if kept, err = s.local(ctx, user); err != nil {
		return Chain{}, Chain{}, false, err
	}
	return kept, other, true, nil
}
