package api_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

// proxyAddr is the loopback address the test's reverse proxy sends from;
// strangers send from 127.0.0.1.
const proxyAddr = "127.0.0.2"

// httpFrom is an HTTP client whose connections leave from local address ip.
func httpFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// nonceStatus asks for a nonce through hc with X-Forwarded-For xff and
// returns the status.
func nonceStatus(t *testing.T, hc *http.Client, url, xff string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/auth/nonce", nil)
	req.Header.Set("X-Forwarded-For", xff)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Behind a trusted proxy every per-client limit counts the client the
// proxy names, so clients behind one proxy do not share limits; the
// X-Forwarded-For of a peer that is not a trusted proxy is ignored, so
// nobody escapes a limit by writing the header.
func TestTrustedProxyLimitsPerClient(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.API.TrustedProxies = []string{proxyAddr + "/32"}
	}))
	url := nw.Nodes[0].APIURL()
	perClient := nw.Nodes[0].Config().Registry.MaxNoncesPerClient
	proxy, stranger := httpFrom(proxyAddr), httpFrom("127.0.0.1")

	t.Run("nonces", func(t *testing.T) {
		for i := range perClient {
			if st := nonceStatus(t, proxy, url, "203.0.113.1"); st != http.StatusOK {
				t.Fatalf("client A's nonce %d: %d", i, st)
			}
		}
		if st := nonceStatus(t, proxy, url, "203.0.113.1"); st != http.StatusTooManyRequests {
			t.Fatalf("client A over its limit: %d", st)
		}
		// Client A writing its own X-Forwarded-For: the proxy appends A's
		// real address, and that is what counts.
		if st := nonceStatus(t, proxy, url, "198.51.100.77, 203.0.113.1"); st != http.StatusTooManyRequests {
			t.Fatalf("client A with a forged entry: %d", st)
		}
		if st := nonceStatus(t, proxy, url, "203.0.113.2"); st != http.StatusOK {
			t.Fatalf("client B behind the same proxy: %d", st)
		}

		for i := range perClient {
			if st := nonceStatus(t, stranger, url, "192.0.2.1"); st != http.StatusOK {
				t.Fatalf("stranger's nonce %d: %d", i, st)
			}
		}
		if st := nonceStatus(t, stranger, url, "192.0.2.2"); st != http.StatusTooManyRequests {
			t.Fatalf("a stranger's X-Forwarded-For was believed: %d", st)
		}
	})

	t.Run("websocket connections", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		dial := func(hc *http.Client, xff string) (int, error) {
			c, resp, err := websocket.Dial(ctx, wsURL(url), &websocket.DialOptions{HTTPClient: hc,
				HTTPHeader: http.Header{"X-Forwarded-For": {xff}}})
			if err != nil {
				if resp != nil {
					return resp.StatusCode, nil
				}
				return 0, err
			}
			t.Cleanup(func() { c.CloseNow() })
			return http.StatusSwitchingProtocols, nil
		}
		for i := range api.MaxWSConnsPerIP {
			if st, err := dial(proxy, "203.0.113.1"); st != http.StatusSwitchingProtocols {
				t.Fatalf("client A's connection %d: %d %v", i, st, err)
			}
		}
		if st, err := dial(proxy, "203.0.113.1"); st != http.StatusTooManyRequests {
			t.Fatalf("client A over its limit: %d %v", st, err)
		}
		if st, err := dial(proxy, "203.0.113.2"); st != http.StatusSwitchingProtocols {
			t.Fatalf("client B behind the same proxy: %d %v", st, err)
		}
	})
}
