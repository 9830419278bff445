package relay

import (
	"fmt"
	"time"

	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/wire"
)

// Config is the [relay] section of a node's configuration.
type Config struct {
	// Enabled makes this node a relay: it serves ProtocolID and holds the
	// mailboxes it is among the closest nodes for. Every node can send,
	// subscribe and ack through the relays either way.
	Enabled bool `toml:"enabled"`
	// Replicas (k) is the number of relays, closest to a device's mailbox
	// key, that hold its envelopes.
	Replicas int `toml:"replicas"`
	// WriteQuorum is how many of them must have an envelope on disk
	// before the sender is told it is stored.
	WriteQuorum int `toml:"write_quorum"`
	// MailboxCap is the number of envelopes carrying the device's delivery
	// key (sent by its contacts) that one device's mailbox holds; senders
	// beyond it get wire.ErrMailboxFull.
	MailboxCap int `toml:"mailbox_cap"`
	// RequestsCap is the number of envelopes without the device's delivery
	// key (message requests from strangers) that one device's mailbox
	// holds, on top of MailboxCap; senders beyond it get
	// wire.ErrRequestsFull.
	RequestsCap int `toml:"requests_cap"`
	// StoreRate and StoreBurst bound the envelopes one peer may store on
	// this relay (store and handover requests), per second and at once;
	// beyond them the relay answers rate_limited.
	StoreRate  float64 `toml:"store_rate"`
	StoreBurst int     `toml:"store_burst"`
	// DefaultTTL is the TTL of envelopes whose sender gives none.
	DefaultTTL config.Duration `toml:"default_ttl"`
	// MaxTTL is the longest TTL this node accepts (at most wire.MaxTTL).
	MaxTTL config.Duration `toml:"max_ttl"`
	// ExpireInterval is how often expired envelopes are deleted.
	ExpireInterval config.Duration `toml:"expire_interval"`
	// RebalanceInterval is how often the relay checks that it is still
	// among the closest nodes of each mailbox it holds, and hands the
	// mailboxes it no longer should hold to the nodes that should.
	RebalanceInterval config.Duration `toml:"rebalance_interval"`
}

// DefaultConfig is a relay holding each mailbox on 3 nodes with a write
// quorum of 2, 10,000 envelopes from contacts and 100 message requests per
// device, for 30 days at most, storing at most 20,000 envelopes/s (bursts
// of 40,000) from one peer.
func DefaultConfig() Config {
	return Config{
		Enabled:           true,
		Replicas:          3,
		WriteQuorum:       2,
		MailboxCap:        DefaultMailboxCap,
		RequestsCap:       DefaultRequestsCap,
		StoreRate:         DefaultStoreRate,
		StoreBurst:        DefaultStoreBurst,
		DefaultTTL:        config.Duration(wire.DefaultTTL),
		MaxTTL:            config.Duration(wire.MaxTTL),
		ExpireInterval:    config.Duration(time.Minute),
		RebalanceInterval: config.Duration(10 * time.Minute),
	}
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > maxReplicas:
		return fmt.Errorf("relay.replicas: %d is not in [1, %d]", c.Replicas, maxReplicas)
	case c.WriteQuorum < 1 || c.WriteQuorum > c.Replicas:
		return fmt.Errorf("relay.write_quorum: %d is not in [1, replicas = %d]", c.WriteQuorum, c.Replicas)
	case c.MailboxCap < 1:
		return fmt.Errorf("relay.mailbox_cap: must be positive, got %d", c.MailboxCap)
	case c.RequestsCap < 0:
		return fmt.Errorf("relay.requests_cap: must not be negative, got %d", c.RequestsCap)
	case !(c.StoreRate > 0):
		return fmt.Errorf("relay.store_rate: must be positive, got %v", c.StoreRate)
	case c.StoreBurst < MaxBatch:
		return fmt.Errorf("relay.store_burst: %d is below one full frame (%d envelopes)", c.StoreBurst, MaxBatch)
	case c.MaxTTL <= 0 || c.MaxTTL.Std() > wire.MaxTTL:
		return fmt.Errorf("relay.max_ttl: %s is not in (0, %s]", c.MaxTTL, wire.MaxTTL)
	case c.DefaultTTL <= 0 || c.DefaultTTL > c.MaxTTL:
		return fmt.Errorf("relay.default_ttl: %s is not in (0, max_ttl = %s]", c.DefaultTTL, c.MaxTTL)
	case c.ExpireInterval <= 0:
		return fmt.Errorf("relay.expire_interval: must be positive, got %s", c.ExpireInterval)
	case c.RebalanceInterval <= 0:
		return fmt.Errorf("relay.rebalance_interval: must be positive, got %s", c.RebalanceInterval)
	}
	return nil
}

// maxReplicas bounds relay.replicas: the DHT's bucket size.
const maxReplicas = 20

// Defaults of the per-peer store limit: a node relays the envelopes of
// every client connected to it, so the limit is far above what one person
// sends and bounds what one stranger peer can write.
const (
	DefaultStoreRate  = 20_000 // envelopes per second
	DefaultStoreBurst = 40_000
)
