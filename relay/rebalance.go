package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Rebalance checks, for every mailbox this relay holds, that it is still
// among the Replicas closest relays; a mailbox it no longer should hold is
// stored on the relays that should (a write quorum of them) before it is
// deleted here. Envelopes no relay took stay for the next round.
func (s *Service) Rebalance(ctx context.Context) error {
	var devices []ident.DeviceID
	if err := s.box.Devices(func(d ident.DeviceID, _ int) bool { devices = append(devices, d); return true }); err != nil {
		return err
	}
	var errs []error
	for _, d := range devices {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		peers, err := s.Relays(ctx, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.Contains(peers, s.host.ID()) {
			continue
		}
		if err := s.handOver(ctx, d, peers); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// handOver moves device's mailbox to peers, batch by batch, deleting here
// what a quorum of them stored.
func (s *Service) handOver(ctx context.Context, device ident.DeviceID, peers []peer.ID) error {
	need := s.quorum(len(peers))
	token, err := s.box.Token(device)
	if err != nil {
		return fmt.Errorf("relay: hand over mailbox of %s: %w", device, err)
	}
	var after uint64
	moved := 0
	for {
		stored, err := s.box.List(device, after, MaxBatch)
		if err != nil || len(stored) == 0 {
			if moved > 0 {
				s.log.Info("handed mailbox over", "device", device.String(), "envelopes", moved, "relays", fmt.Sprint(peers))
			}
			return err
		}
		stored = stored[:frameRun(stored)]
		after = stored[len(stored)-1].Seq
		envs := make([]Envelope, len(stored))
		for i := range stored {
			envs[i] = stored[i].Envelope
		}
		ok := make([]int, len(envs))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Go(func() {
				errs := s.storeRemote(ctx, p, msgHandover, device, envs, token)
				mu.Lock()
				defer mu.Unlock()
				for i, err := range errs {
					if err == nil {
						ok[i]++
					}
				}
			})
		}
		wg.Wait()
		var done []wire.EnvelopeRef
		for i, n := range ok {
			if n >= need {
				done = append(done, envs[i].Ref())
			}
		}
		if len(done) == 0 {
			return fmt.Errorf("relay: hand over mailbox of %s: no envelope reached %d relays", device, need)
		}
		n, err := s.box.Ack(device, done)
		if err != nil {
			return fmt.Errorf("relay: delete handed-over envelopes: %w", err)
		}
		moved += n
		s.met.handedOut.Add(float64(n))
	}
}
