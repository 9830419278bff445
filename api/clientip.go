package api

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP is the address every per-client limit of r counts against
// (nonces, WebSocket connections): the TCP peer, or, when the peer is a
// trusted proxy (api.trusted_proxies), the client address the proxies
// recorded in X-Forwarded-For.
func (s *Server) clientIP(r *http.Request) string {
	return clientAddr(s.proxies, r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
}

// clientAddr is the client address of a request from TCP peer remote with
// X-Forwarded-For header lines xff, given the trusted proxies. While the
// current hop is a trusted proxy, the next address to the left in
// X-Forwarded-For (the one that proxy appended) is the hop before it; the
// first hop that is not a trusted proxy is the client. An entry that is not
// an IP address ends the walk at the hop that sent it: a proxy writes
// addresses, so anything else came from the client side. With no trusted
// proxies X-Forwarded-For is never read: anyone can write it.
func clientAddr(proxies []netip.Prefix, remote string, xff []string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	hop, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	hop = hop.Unmap()
	if !trusted(proxies, hop) {
		return hop.String()
	}
	var entries []string
	for _, line := range xff {
		entries = append(entries, strings.Split(line, ",")...)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(entries[i]))
		if err != nil {
			break
		}
		hop = a.Unmap()
		if !trusted(proxies, hop) {
			break
		}
	}
	return hop.String()
}

func trusted(proxies []netip.Prefix, a netip.Addr) bool {
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
