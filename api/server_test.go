package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/volo-chat/volo/wire"
)

type fakeBackend struct{ health map[string]error }

func (f *fakeBackend) Info() NodeInfo {
	return NodeInfo{PeerID: "12D3KooWtest", Addrs: []string{"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWtest"}, Roles: []string{"dht"}, Version: "v", Peers: 2, RoutingTableSize: 2}
}
func (f *fakeBackend) Health() map[string]error { return f.health }

func startServer(t *testing.T, b Backend) *Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	s, err := New(cfg, b, reg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func do(t *testing.T, method, url string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func decodeError(t *testing.T, body []byte) wire.ErrorDetail {
	t.Helper()
	var e struct {
		Error wire.ErrorDetail `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not a JSON error body: %s (%v)", body, err)
	}
	return e.Error
}

func TestHealthz(t *testing.T) {
	b := &fakeBackend{health: map[string]error{"host": nil, "dht": nil, "store": nil}}
	s := startServer(t, b)
	code, _, body := do(t, "GET", s.URL()+"/healthz")
	if code != 200 || !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("healthy: %d %s", code, body)
	}
	b.health = map[string]error{"host": nil, "dht": errors.New("closed"), "store": nil}
	code, _, body = do(t, "GET", s.URL()+"/healthz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("unhealthy: status %d", code)
	}
	if e := decodeError(t, body); e.Code != "unhealthy" || !strings.Contains(e.Message, "dht: closed") {
		t.Errorf("unhealthy body: %+v", e)
	}
}

func TestNodeInfo(t *testing.T) {
	s := startServer(t, &fakeBackend{})
	code, hdr, body := do(t, "GET", s.URL()+"/v1/node")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", code, hdr.Get("Content-Type"))
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peer_id", "addrs", "roles", "version", "peers", "routing_table_size"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing %q in %s", k, body)
		}
	}
}

func TestErrorsAreJSON(t *testing.T) {
	s := startServer(t, &fakeBackend{})
	code, _, body := do(t, "GET", s.URL()+"/v1/nothing")
	if code != 404 || decodeError(t, body).Code != "not_found" {
		t.Errorf("unknown path: %d %s", code, body)
	}
	code, hdr, body := do(t, "DELETE", s.URL()+"/v1/node")
	if code != 405 || decodeError(t, body).Code != "method_not_allowed" || hdr.Get("Allow") != "GET" {
		t.Errorf("wrong method: %d %s allow=%q", code, body, hdr.Get("Allow"))
	}
}

func TestMetricsAreVoloNamed(t *testing.T) {
	s := startServer(t, &fakeBackend{})
	do(t, "GET", s.URL()+"/v1/node")
	code, _, body := do(t, "GET", s.URL()+"/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	if !strings.Contains(string(body), `volo_api_requests_total{code="200",route="/v1/node"} 1`) {
		t.Errorf("request not counted:\n%s", body)
	}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "volo_") {
			t.Errorf("metric not named volo_…: %s", line)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, listen := range []string{"localhost", "127.0.0.1:http", "127.0.0.1:70000", ""} {
		c := DefaultConfig()
		c.Listen = listen
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "api.listen") {
			t.Errorf("listen %q: %v", listen, err)
		}
	}
}

// A connection that never sends a request (an HTTP client keeps a spare
// connection it dialed ahead) does not hold a stop: Stop returns without
// error, well within the shutdown timeout that such a connection would
// otherwise use up (http.Server waits 5 s for a first request).
func TestStopWithFreshConnection(t *testing.T) {
	s := startServer(t, &fakeBackend{})
	idle, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if code, _, _ := do(t, http.MethodGet, s.URL()+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("stop with a connection that sent nothing: %v", err)
	}
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("the fresh connection is still open after Stop")
	}
}
