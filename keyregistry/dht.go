package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/ident"
)

// Timeouts of the registry's DHT work.
const (
	// PublishTimeout bounds the DHT put of a changed chain.
	PublishTimeout = 30 * time.Second
	// LookupTimeout bounds a DHT lookup of a chain this node does not hold.
	LookupTimeout = 30 * time.Second
)

// fetch reads user's chain from the DHT and verifies it, attestation and
// budget included.
func (s *Service) fetch(ctx context.Context, user ident.UserID) (Chain, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	v, err := s.net.DHT.GetValue(ctx, RecordKey(user))
	if errors.Is(err, routing.ErrNotFound) {
		return Chain{}, fmt.Errorf("%w: %s", ErrUserNotFound, user)
	}
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %s: dht: %v", ErrUserNotFound, user, err)
	}
	c, err := s.val.decode(v, user, true)
	if err != nil {
		if !errors.Is(err, ErrAttestBudget) { // the budget counts its own
			s.reject(reasonOf(err))
		}
		return Chain{}, err
	}
	return c, nil
}

// publish puts c in the DHT and announces it on the gossip topic. A failure
// is logged and counted: the chain is stored, and the next republish puts
// it again.
func (s *Service) publish(ctx context.Context, c Chain) {
	rec := c.Record().Encode()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PublishTimeout)
	defer cancel()
	if err := s.net.DHT.PutValue(pctx, RecordKey(c.Set.User()), rec); err != nil {
		s.m.publishErrors.Inc()
		level := slog.LevelWarn
		if s.net.DHT.RoutingTableSize() == 0 {
			level = slog.LevelDebug // a node alone has no one to put it on
		}
		s.log.Log(pctx, level, "DHT put of a chain failed; the republish will retry", "user", c.Set.User().String(), "version", c.Version(), "err", err)
	}
	if s.topic != nil {
		if err := s.topic.Publish(pctx, rec); err != nil {
			s.log.Warn("gossip of a chain failed", "user", c.Set.User().String(), "err", err)
		}
	}
}

// Republish puts every chain in the store in the DHT again.
func (s *Service) Republish(ctx context.Context) (int, error) {
	var recs [][]byte
	err := s.db.Iterate([]byte(chainPrefix), false, func(_, v []byte) error {
		recs = append(recs, bytes.Clone(v))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("keyregistry: republish: %w", err)
	}
	n := 0
	for _, v := range recs {
		c, err := DecodeRecord(v, ident.UserID{})
		if err != nil {
			s.log.Error("republish: stored chain does not verify", "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, PublishTimeout)
		err = s.net.DHT.PutValue(pctx, RecordKey(c.Set.User()), v)
		cancel()
		if err != nil {
			s.m.publishErrors.Inc()
			s.log.Warn("republish failed", "user", c.Set.User().String(), "err", err)
			continue
		}
		s.m.republished.Inc()
		n++
	}
	return n, ctx.Err()
}
