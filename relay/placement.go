package relay

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Placement limits.
const (
	// placementTTL is how long Send and Ack reuse the relays found for a
	// mailbox before asking the DHT again.
	placementTTL = 30 * time.Second
	// placementRecheck is the age past which a cached placement that
	// leaves this node out is looked up again before a store is refused.
	placementRecheck = time.Second
	// maxPlacements bounds the cached placements; past it the cache
	// starts again empty.
	maxPlacements = 1 << 14
	// lookupTimeout bounds one closest-peers lookup.
	lookupTimeout = 15 * time.Second
)

// mailboxKeyPrefix is what MailboxKey hashes before the device ID.
const mailboxKeyPrefix = "volo/mailbox/"

// MailboxKey is the DHT key whose closest relays hold device's mailbox:
// sha256("volo/mailbox/" + device ID text).
func MailboxKey(d ident.DeviceID) []byte {
	h := sha256.Sum256([]byte(mailboxKeyPrefix + d.String()))
	return h[:]
}

type placement struct {
	peers []peer.ID
	at    time.Time
}

// Relays returns the relays of device's mailbox, closest first, as every
// node computes them: the Replicas nodes that speak ProtocolID closest to
// MailboxKey(device) by XOR distance.
func (s *Service) Relays(ctx context.Context, device ident.DeviceID) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	peers, err := s.host.ClosestPeers(ctx, MailboxKey(device), s.cfg.Replicas, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("relay: relays of %s: %w", device, err)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoRelays, device)
	}
	s.mu.Lock()
	if len(s.place) >= maxPlacements {
		clear(s.place)
	}
	s.place[string(device.Bytes())] = placement{peers: peers, at: time.Now()}
	s.mu.Unlock()
	return peers, nil
}

// cachedRelays is Relays, reusing a lookup younger than placementTTL.
func (s *Service) cachedRelays(ctx context.Context, device ident.DeviceID) ([]peer.ID, error) {
	s.mu.Lock()
	p, ok := s.place[string(device.Bytes())]
	s.mu.Unlock()
	if ok && time.Since(p.at) < placementTTL {
		return p.peers, nil
	}
	return s.Relays(ctx, device)
}

// responsible reports whether this node is among the relays of device's
// mailbox, by the cached placement; a cached placement that leaves this
// node out is looked up again once, so a relay that joined lately is not
// refused by its own stale view.
func (s *Service) responsible(ctx context.Context, device ident.DeviceID) bool {
	self := s.host.ID()
	s.mu.Lock()
	p, ok := s.place[string(device.Bytes())]
	s.mu.Unlock()
	fresh := ok && time.Since(p.at) < placementTTL
	if fresh && slices.Contains(p.peers, self) {
		return true
	}
	if fresh && time.Since(p.at) < placementRecheck {
		return false
	}
	peers, err := s.Relays(ctx, device)
	if err != nil {
		s.log.Debug("placement lookup failed", "device", device.String(), "err", err)
		return false
	}
	return slices.Contains(peers, self)
}

// quorum is the write quorum for a mailbox with n relays: WriteQuorum, or
// every relay when the network has fewer.
func (s *Service) quorum(n int) int { return min(s.cfg.WriteQuorum, n) }
