package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/volo-chat/volo/internal/config"
)

// Config is the [p2p] section of a node's configuration.
type Config struct {
	// Listen are the multiaddrs the host listens on (TCP and QUIC).
	Listen []string `toml:"listen"`
	// Bootstrap are full multiaddrs (with /p2p/<peer ID>) of nodes to join.
	Bootstrap []string `toml:"bootstrap"`
	// ConnManager trims connections between the two water marks.
	ConnManager ConnManagerConfig `toml:"conn_manager"`
	// Resources bounds what libp2p may use as a whole.
	Resources ResourceConfig `toml:"resources"`
}

// ConnManagerConfig is the [p2p.conn_manager] section.
type ConnManagerConfig struct {
	// LowWater is the number of connections trimming brings us down to.
	LowWater int `toml:"low_water"`
	// HighWater is the number of connections that starts trimming.
	HighWater int `toml:"high_water"`
	// GracePeriod protects new connections from trimming.
	GracePeriod config.Duration `toml:"grace_period"`
}

// ResourceConfig is the [p2p.resources] section: the libp2p resource
// manager's limits are scaled from these two numbers.
type ResourceConfig struct {
	// MaxMemoryMB is the memory libp2p may reserve for connections and streams.
	MaxMemoryMB int `toml:"max_memory_mb"`
	// MaxFileDescriptors is the number of sockets libp2p may hold.
	MaxFileDescriptors int `toml:"max_file_descriptors"`
}

// DefaultConfig returns the settings of a node on this machine only:
// TCP and QUIC on 127.0.0.1 port 4001, no bootstrap peers.
func DefaultConfig() Config {
	return Config{
		Listen:    []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"},
		Bootstrap: []string{},
		ConnManager: ConnManagerConfig{
			LowWater:    100,
			HighWater:   400,
			GracePeriod: config.Duration(time.Minute),
		},
		Resources: ResourceConfig{MaxMemoryMB: 1024, MaxFileDescriptors: 4096},
	}
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	if len(c.Listen) == 0 {
		return errors.New("p2p.listen: at least one address is needed")
	}
	if _, err := parseMultiaddrs(c.Listen); err != nil {
		return err
	}
	if _, err := ParseBootstrap(c.Bootstrap); err != nil {
		return err
	}
	cm := c.ConnManager
	if cm.LowWater < 1 || cm.HighWater < cm.LowWater {
		return fmt.Errorf("p2p.conn_manager: need 1 <= low_water (%d) <= high_water (%d)", cm.LowWater, cm.HighWater)
	}
	if cm.GracePeriod < 0 {
		return fmt.Errorf("p2p.conn_manager.grace_period: negative (%s)", cm.GracePeriod)
	}
	if c.Resources.MaxMemoryMB < 64 {
		return fmt.Errorf("p2p.resources.max_memory_mb: %d is below the minimum of 64", c.Resources.MaxMemoryMB)
	}
	if c.Resources.MaxFileDescriptors < 64 {
		return fmt.Errorf("p2p.resources.max_file_descriptors: %d is below the minimum of 64", c.Resources.MaxFileDescriptors)
	}
	return nil
}

func parseMultiaddrs(ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for i, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p.listen[%d]: bad multiaddr %q: %w", i, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseBootstrap parses full multiaddrs of bootstrap peers; each must end in
// /p2p/<peer ID>. Addresses of one peer are merged.
func ParseBootstrap(ss []string) ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(ss))
	for i, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p.bootstrap[%d]: bad multiaddr %q: %w", i, s, err)
		}
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("p2p.bootstrap[%d]: %q must end in /p2p/<peer ID>: %w", i, s, err)
		}
		addrs = append(addrs, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("p2p.bootstrap: %w", err)
	}
	return infos, nil
}
