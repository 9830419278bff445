package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
)

// `volo-node run` with the dev config and a fresh data directory starts the
// embedded devnet and anchors a registration, which verify then accepts.
func TestRunAnchorsWithDevConfig(t *testing.T) {
	dir := t.TempDir()
	p := startNode(t, "--data-dir", dir, "--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	url := p.apiURL(t)
	set := registerUser(t, url, newDevice(t))
	tstest.WaitFor(t, hangGuard, func() error {
		if u, _ := userAt(t, url, set.User()); !allProved(u, 1) {
			return errors.New("the registration was not anchored")
		}
		return nil
	})
	socket := filepath.Join(dir, node.DevnetDir, "node.socket")
	depth := strconv.Itoa(int(node.DefaultChainConfig().ConfirmationDepth))
	if code, out := verify(t, "--user", set.User().String(), "--node-url", url, "--cardano-socket", socket,
		"--network", "devnet", "--min-depth", depth); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	stderr := p.wait(t)
	for _, want := range []string{"anchoring on the embedded Cardano devnet", "batch anchored"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, stderr)
		}
	}
}

// volo-node devnet shares node 0's Cardano devnet: the other nodes are
// funded and anchor through its socket, and every node serves every proof.
func TestDevnetAnchorsOnNodeZerosChain(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Chain.Devnet.BlockInterval = config.Duration(100 * time.Millisecond)
	cfg.Registry.BatchInterval = config.Duration(100 * time.Millisecond)
	nodes, err := startDevnet(t.Context(), cfg, 2, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll(nodes)
	if c := nodes[1].Config().Chain; c.Backend != node.ChainCardano || c.Socket != nodes[0].Devnet().SocketPath() || nodes[1].Devnet() != nil {
		t.Fatalf("node 1 chain config %+v", c)
	}
	var out strings.Builder
	printDevnet(&out, cfg, "", nodes)
	if !strings.Contains(out.String(), "volo-node verify --user USER_ID --node-url "+nodes[0].APIURL()+" --cardano-socket "+nodes[0].Devnet().SocketPath()) {
		t.Errorf("no verify hint in\n%s", out.String())
	}
	set := registerUser(t, nodes[1].APIURL(), newDevice(t))
	tstest.WaitFor(t, hangGuard, func() error {
		for _, n := range nodes {
			if u, _ := userAt(t, n.APIURL(), set.User()); !allProved(u, 1) {
				return fmt.Errorf("node %s has no proof of the registration", n.PeerID())
			}
		}
		return nil
	})
}
