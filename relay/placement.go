package relay

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Placement limits.
const (
	// placementTTL is how long Send and Ack reuse the relays found for a
	// mailbox before asking the DHT again.
	placementTTL = 30 * time.Second
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

// quorum is the write quorum for a mailbox with n relays: WriteQuorum, or
// every relay when the network has fewer.
func (s *Service) quorum(n int) int { return min(s.cfg.WriteQuorum, n) }
