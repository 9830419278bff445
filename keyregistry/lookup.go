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

// save writes c to the store.
func (s *Service) save(ctx context.Context, c Chain) error {
	if err := s.d.Put(ctx, chainKey(c.Set.User()), c.Record().Encode()); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	return nil
}

// keep stores c if the node has no chain of its user or c extends it, and
// reports how c relates to what the node held.
func (s *Service) keep(ctx context.Context, c Chain) error {
	_, err := s.consider(ctx, c)
	return err
}

// consider stores c when it is new to the node or extends its chain, and
// says how c related to the chain the node held.
func (s *Service) consider(ctx context.Context, c Chain) (ident.ChainRelation, error) {
	user := c.Set.User()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.local(ctx, user)
	switch {
	case errors.Is(err, ErrUserNotFound):
		return ident.ChainExtends, s.save(ctx, c)
	case err != nil:
		return 0, err
	}
	res := ident.ResolveFork(cur.Set, c.Set, s.anchoredAt(user))
	if res.Candidate {
		return res.Relation, s.save(ctx, c)
	}
	return res.Relation, nil
}
