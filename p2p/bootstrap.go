package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Bootstrap retry schedule: the first retry after BootstrapRetryMin, then
// doubling up to BootstrapRetryMax, until the peer answers.
const (
	BootstrapRetryMin = time.Second
	BootstrapRetryMax = time.Minute
	// bootstrapDialTimeout bounds one connection attempt.
	bootstrapDialTimeout = 15 * time.Second
)

// bootstrap connects to every bootstrap peer, each retried on its own until
// it answers, and refreshes the routing table after each success so that the
// DHT learns the rest of the network from it.
func (h *Host) bootstrap(ctx context.Context) {
	var wg sync.WaitGroup
	for _, pi := range h.boot {
		if pi.ID == h.ID() {
			continue
		}
		wg.Add(1)
		go func(pi peer.AddrInfo) {
			defer wg.Done()
			attempt := 0
			err := Retry(ctx, BootstrapRetryMin, BootstrapRetryMax, func(ctx context.Context) error {
				attempt++
				dctx, cancel := context.WithTimeout(ctx, bootstrapDialTimeout)
				defer cancel()
				err := h.host.Connect(dctx, pi)
				if err != nil {
					h.log.Warn("bootstrap peer unreachable, will retry", "peer", pi.ID.String(), "attempt", attempt, "err", err)
				}
				return err
			})
			if err != nil {
				return // the host is stopping
			}
			h.log.Info("connected to bootstrap peer", "peer", pi.ID.String(), "attempts", attempt)
			select {
			case <-h.dht.RefreshRoutingTable():
			case <-ctx.Done():
			}
		}(pi)
	}
	wg.Wait()
}

// Retry calls fn until it returns nil or ctx ends, pausing first after the
// first failure and doubling the pause up to limit. It returns ctx's error
// if it gave up.
func Retry(ctx context.Context, first, limit time.Duration, fn func(context.Context) error) error {
	pause := first
	for {
		if err := fn(ctx); err == nil {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(pause*2, limit)
	}
}
