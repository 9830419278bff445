package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volo-chat/volo/ident"
)

var (
	// ErrInvalidProof reports a registration proof that does not decode or
	// verify.
	ErrInvalidProof = errors.New("keyregistry: invalid registration proof")
	// ErrInvalidLink reports a link that does not decode or does not verify
	// on the chain (signature, signer, kind).
	ErrInvalidLink = errors.New("keyregistry: invalid link")
	// ErrStaleChain reports a link that does not follow the newest version
	// of the chain.
	ErrStaleChain = errors.New("keyregistry: link does not follow the newest chain")
	// ErrAlreadyRegistered reports an account or a user that exists.
	ErrAlreadyRegistered = errors.New("keyregistry: already registered")
	// ErrTicketRequired reports a registration without a ticket on a node
	// that requires one.
	ErrTicketRequired = fmt.Errorf("%w: a ticket is required", ErrBadTicket)
)

// Nonce issues a registration nonce to client (its IP address).
func (s *Service) Nonce(client string) ([]byte, time.Time, error) {
	n, exp, err := s.nonces.Issue(client)
	if err != nil {
		s.reject("too_many_nonces")
	}
	return n, exp, err
}

// Register verifies and publishes a new user: proof is a registration proof
// over a nonce this node issued (used up by the attempt), genesis the
// user's first link, ticket a registration ticket (optional only with open
// registration). The node attests the registration with its peer key
// (Attest): an OIDC attestation for a ticket's account, a development
// one without. It returns the new user's chain.
func (s *Service) Register(ctx context.Context, genesis, proof []byte, ticket string) (Chain, error) {
	c, err := s.register(ctx, genesis, proof, ticket)
	if err != nil {
		s.reject(reasonOf(err))
		return Chain{}, err
	}
	s.m.registrations.Inc()
	s.publish(ctx, c)
	return c, nil
}

func (s *Service) register(ctx context.Context, genesis, proof []byte, ticket string) (Chain, error) {
	p, err := ident.DecodeRegistrationProof(proof)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	if err := s.nonces.Consume(p.Nonce); err != nil {
		return Chain{}, err
	}
	var acct Account
	switch {
	case ticket != "":
		if acct, err = s.logins.peekTicket(ticket); err != nil {
			return Chain{}, err
		}
	case !s.cfg.OpenRegistration:
		return Chain{}, ErrTicketRequired
	}
	if len(genesis) > ident.MaxLinkSize {
		return Chain{}, fmt.Errorf("%w: %d bytes", ErrInvalidLink, len(genesis))
	}
	link, err := ident.DecodeLink(genesis)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	set, err := ident.VerifyRegistrationGenesis(p, p.Nonce, link)
	if err != nil {
		var ce *ident.ChainError
		if errors.As(err, &ce) {
			return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
		}
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	user := set.User()
	kind, account := KindDevelopment, []byte(nil)
	if ticket != "" {
		kind, account = KindOIDC, AccountHash(user, acct)
	}
	att, err := Attest(s.net.Key, user, kind, account, time.Now())
	if err != nil {
		return Chain{}, err
	}
	c := Chain{Set: set, Links: [][]byte{link.Encode()}, Attestation: att}

	s.regMu.Lock()
	defer s.regMu.Unlock()
	// The user's lock too: a gossiped copy of the same user must not be
	// written between the check and the write.
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	if ok, err := s.d.Has(ctx, chainKey(user)); err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	} else if ok {
		return Chain{}, fmt.Errorf("%w: user %s exists", ErrAlreadyRegistered, user)
	}
	if ticket != "" {
		if ok, err := s.d.Has(ctx, accountKey(acct)); err != nil {
			return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
		} else if ok {
			return Chain{}, fmt.Errorf("%w: the account has a user", ErrAlreadyRegistered)
		}
		if _, err := s.logins.takeTicket(ticket); err != nil {
			return Chain{}, err
		}
	}
	// The chain, the account and the anchor queue entry: one transaction.
	err = s.anchors.EnqueueWith(user, link, func(txn *badger.Txn) error {
		err := txn.Set(s.db.Key(chainKey(user).Bytes()), c.Record().Encode())
		if ticket != "" {
			err = errors.Join(err, txn.Set(s.db.Key(accountKey(acct).Bytes()), user.Bytes()))
		}
		return err
	})
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	s.log.Info("user registered", "user", user.String(), "oauth", ticket != "", "attestation", kind.String())
	return c, nil
}

// AppendLink verifies one link on the newest chain of user the node can
// find and, if it follows it, stores, publishes and queues it.
func (s *Service) AppendLink(ctx context.Context, user ident.UserID, encoded []byte) (Chain, error) {
	c, err := s.appendLink(ctx, user, encoded)
	if err != nil {
		s.reject(reasonOf(err))
		return Chain{}, err
	}
	s.m.links.Inc()
	s.publish(ctx, c)
	return c, nil
}

func (s *Service) appendLink(ctx context.Context, user ident.UserID, encoded []byte) (Chain, error) {
	if len(encoded) > ident.MaxLinkSize {
		return Chain{}, fmt.Errorf("%w: %d bytes", ErrInvalidLink, len(encoded))
	}
	link, err := ident.DecodeLink(encoded)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.local(ctx, user)
	if errors.Is(err, ErrUserNotFound) || (err == nil && link.Seq > cur.Version()+1) {
		// Unknown here, or this node is behind: ask the network.
		if net, nerr := s.fetch(ctx, user); nerr == nil && (err != nil || ident.Relate(cur.Set, net.Set) == ident.ChainExtends) {
			cur, err = net, nil
			if serr := s.save(ctx, cur); serr != nil {
				return Chain{}, serr
			}
		}
	}
	if err != nil {
		return Chain{}, err
	}
	base, loser := cur, Chain{}
	if head := cur.Set.Head(); link.Seq != head.Version+1 || !link.Prev.Equal(head.Link) {
		// A link may extend the other branch of a known fork when the
		// longer branch then wins the fork: a recovery-key link does.
		_, other, ok, ferr := s.forkBranches(ctx, user)
		if ferr != nil {
			return Chain{}, ferr
		}
		oh := other.Set.Head()
		if !ok || link.Seq != oh.Version+1 || !link.Prev.Equal(oh.Link) {
			return Chain{}, fmt.Errorf("%w: link %d after %s, newest is version %d (%s)", ErrStaleChain, link.Seq, link.Prev, head.Version, head.Link)
		}
		base, loser = other, cur
	}
	set, err := base.Set.Apply(link)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	next := Chain{Set: set, Links: append(base.Links[:len(base.Links):len(base.Links)], link.Encode()), Attestation: base.Attestation}
	if loser.Version() != 0 {
		if !ident.ResolveFork(loser.Set, next.Set, s.anchoredAt(user)).Candidate {
			head := cur.Set.Head()
			return Chain{}, fmt.Errorf("%w: link %d extends the losing branch of a fork; newest is version %d (%s)", ErrStaleChain, link.Seq, head.Version, head.Link)
		}
		s.m.forks.Inc()
		s.log.Warn("a link makes the other branch of a fork win", "user", user.String(), "version", next.Version(), "kind", link.Kind)
	}
	// The chain (and, when it takes over from the other branch of a fork,
	// the branch it replaces) and the anchor queue entry: one transaction.
	err = s.anchors.EnqueueWith(user, link, func(txn *badger.Txn) error {
		if loser.Version() != 0 {
			if err := txn.Set(s.db.Key(forkKey(user).Bytes()), loser.Record().Encode()); err != nil {
				return err
			}
		}
		return txn.Set(s.db.Key(chainKey(user).Bytes()), next.Record().Encode())
	})
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	s.log.Info("link appended", "user", user.String(), "version", set.Version(), "kind", link.Kind)
	return next, nil
}
