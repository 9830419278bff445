package api

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, c := range []struct {
		name    string
		proxies []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"no proxy configured: the header is ignored", nil, "192.0.2.7:4000", []string{"203.0.113.1"}, "192.0.2.7"},
		{"untrusted peer: the header is ignored", proxies, "192.0.2.7:4000", []string{"203.0.113.1"}, "192.0.2.7"},
		{"one trusted proxy", proxies, "10.0.0.1:4000", []string{"203.0.113.1"}, "203.0.113.1"},
		{"the client's own entries left of its address do not count", proxies, "10.0.0.1:4000", []string{"198.51.100.9, 203.0.113.1"}, "203.0.113.1"},
		{"a chain of trusted proxies", proxies, "10.0.0.1:4000", []string{"203.0.113.1, 10.0.0.2", "10.0.0.3"}, "203.0.113.1"},
		{"trusted proxy without the header", proxies, "10.0.0.1:4000", nil, "10.0.0.1"},
		{"only trusted proxies in the header", proxies, "10.0.0.1:4000", []string{"10.0.0.5"}, "10.0.0.5"},
		{"garbage stops the walk at the hop that sent it", proxies, "10.0.0.1:4000", []string{"203.0.113.1, not-an-ip, 10.0.0.2"}, "10.0.0.2"},
		{"IPv6 proxy and client", proxies, "[2001:db8::1]:4000", []string{"2001:db8:ffff::1, 2a00::7"}, "2a00::7"},
		{"IPv4-mapped peer", proxies, "[::ffff:10.0.0.1]:4000", []string{"203.0.113.1"}, "203.0.113.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := clientAddr(c.proxies, c.remote, c.xff); got != c.want {
				t.Errorf("clientAddr(%q, %q) = %s, want %s", c.remote, c.xff, got, c.want)
			}
		})
	}
}

// FuzzClientAddr: whatever X-Forwarded-For says, the client address is the
// TCP peer or one of the header's entries, and only when the peer is a
// trusted proxy is the header read at all.
func FuzzClientAddr(f *testing.F) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Add("10.0.0.1:4000", "203.0.113.1")
	f.Add("10.0.0.1:4000", "198.51.100.9, 203.0.113.1, 10.0.0.2")
	f.Add("192.0.2.7:1", "203.0.113.1")
	f.Add("[::ffff:10.0.0.1]:4000", "2a00::7,,x")
	f.Add("garbage", "")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		got := clientAddr(proxies, remote, []string{xff})
		if clientAddr(nil, remote, []string{xff}) != clientAddr(nil, remote, nil) {
			t.Fatal("the header was read with no trusted proxy")
		}
		if got == clientAddr(proxies, remote, nil) {
			return
		}
		for _, e := range strings.Split(xff, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(e)); err == nil && a.Unmap().String() == got {
				return
			}
		}
		t.Fatalf("client %q is neither the peer %q nor an entry of %q", got, remote, xff)
	})
}
