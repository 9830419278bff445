package node_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode
}

func TestNodeRestartKeepsIdentityAndStore(t *testing.T) {
	cfg := testnet.Config(t.TempDir())
	n, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.UncleanShutdown {
		t.Error("fresh data directory reported an unclean shutdown")
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var health map[string]any
	if code := getJSON(t, n.APIURL()+"/healthz", &health); code != http.StatusOK {
		t.Fatalf("healthz %d: %v", code, health)
	}
	var info api.NodeInfo
	getJSON(t, n.APIURL()+"/v1/node", &info)
	if info.PeerID != n.PeerID().String() || len(info.Addrs) == 0 || !strings.HasSuffix(info.Addrs[0], "/p2p/"+info.PeerID) {
		t.Errorf("node info %+v", info)
	}
	if err := n.Store().Prefix("test/").Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	n2, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Stop()
	if n2.UncleanShutdown {
		t.Error("clean stop reported as unclean")
	}
	if n2.PeerID() != n.PeerID() {
		t.Errorf("peer ID changed across restart: %s then %s", n.PeerID(), n2.PeerID())
	}
	if v, err := n2.Store().Prefix("test/").Get([]byte("k")); err != nil || string(v) != "v" {
		t.Errorf("store after restart: %q, %v", v, err)
	}
}

func TestNodeDetectsUncleanShutdown(t *testing.T) {
	cfg := testnet.Config(t.TempDir())
	n, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: close the database without the node's orderly stop.
	n.Host().Stop()
	n.Store().Close()
	n2, err := node.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Stop()
	if !n2.UncleanShutdown {
		t.Error("a run that never stopped was not reported as unclean")
	}
}

func TestStartFailsOnPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port

	t.Run("api", func(t *testing.T) {
		cfg := testnet.Config(t.TempDir())
		cfg.API.Listen = ln.Addr().String()
		n, err := node.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = n.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "start api") || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("err = %v", err)
		}
		// The failed start released everything: the store is closed.
		if !n.Store().IsClosed() {
			t.Error("store still open after a failed start")
		}
	})
	t.Run("p2p", func(t *testing.T) {
		cfg := testnet.Config(t.TempDir())
		cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/" + strconv.Itoa(busy)}
		n, err := node.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = n.Start(t.Context())
		if err == nil || !strings.Contains(err.Error(), "start p2p") || !strings.Contains(err.Error(), "/tcp/"+strconv.Itoa(busy)) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	cfg := testnet.Config(t.TempDir())
	cfg.Log.Level = "chatty"
	if _, err := node.New(cfg, nil); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("err = %v", err)
	}
	// Nothing was created for a config that fails validation.
	if entries, _ := os.ReadDir(cfg.DataDir); len(entries) != 0 {
		t.Errorf("data directory not empty: %v", entries)
	}
}
