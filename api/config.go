package api

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/volo-chat/volo/internal/config"
)

// Config is the [api] section of a node's configuration.
type Config struct {
	// Listen is the HOST:PORT of the HTTP server; port 0 picks a free port.
	Listen string `toml:"listen"`
	// ShutdownTimeout bounds how long Stop waits for requests in flight.
	ShutdownTimeout config.Duration `toml:"shutdown_timeout"`
	// PublicURL is the base URL (scheme://host[:port], no path) at which
	// browsers and clients reach this API, for OAuth redirect URLs; empty
	// means the URL the server listens on.
	PublicURL string `toml:"public_url"`
	// WSSendRate and WSSendBurst bound the envelopes one device may send
	// over its WebSocket: a token bucket refilled at WSSendRate per second
	// holding at most WSSendBurst.
	WSSendRate  float64 `toml:"ws_send_rate"`
	WSSendBurst int     `toml:"ws_send_burst"`
	// TrustedProxies are the CIDRs of reverse proxies in front of the API.
	// For a request whose TCP peer is in one of them, every per-client
	// limit counts the client address from X-Forwarded-For instead: the
	// rightmost address that is not itself a trusted proxy. Empty: the TCP
	// peer is the client, and X-Forwarded-For is ignored.
	TrustedProxies []string `toml:"trusted_proxies"`
}

// DefaultConfig listens on 127.0.0.1:8080.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", ShutdownTimeout: config.Duration(5 * time.Second),
		WSSendRate: DefaultWSSendRate, WSSendBurst: DefaultWSSendBurst, TrustedProxies: []string{}}
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %q is not HOST:PORT: %w", c.Listen, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("api.listen: bad port %q in %q", port, c.Listen)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return fmt.Errorf("api.public_url: %q is not scheme://host[:port]", c.PublicURL)
		}
	}
	if c.WSSendRate <= 0 {
		return fmt.Errorf("api.ws_send_rate: must be positive, got %v", c.WSSendRate)
	}
	if c.WSSendBurst < 1 {
		return fmt.Errorf("api.ws_send_burst: must be at least 1, got %d", c.WSSendBurst)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("api.shutdown_timeout: must be positive, got %s", c.ShutdownTimeout)
	}
	if _, err := c.proxies(); err != nil {
		return err
	}
	return nil
}

// proxies parses TrustedProxies.
func (c Config) proxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for i, s := range c.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("api.trusted_proxies[%d]: %q is not a CIDR (e.g. 10.0.0.0/8, ::1/128): %w", i, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
