// Package testnet starts real Volo nodes in-process on loopback for tests:
// random ports, temporary data directories, routing tables filled before
// the test runs, every node stopped when it ends.
package testnet

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/volo-chat/volo/node"
)

// settleTimeout bounds how long New waits for the routing tables to fill.
const settleTimeout = 2 * time.Minute

// Network is a set of running nodes; node 0 is the bootstrap peer of the others.
type Network struct {
	t     testing.TB
	Nodes []*node.Node
}

// Option changes how New builds the network.
type Option func(*settings)

type settings struct {
	configure   func(i int, cfg *node.Config)
	beforeStart func(i int, n *node.Node)
	logLevel    slog.Level
}

// Configure edits node i's configuration before it is built.
func Configure(fn func(i int, cfg *node.Config)) Option {
	return func(s *settings) { s.configure = fn }
}

// BeforeStart runs on node i after it is built and before it starts: the
// place to register record validators and protocol handlers.
func BeforeStart(fn func(i int, n *node.Node)) Option {
	return func(s *settings) { s.beforeStart = fn }
}

// LogLevel sets the level of the nodes' logs, written to the test's output
// (default warn).
func LogLevel(l slog.Level) Option { return func(s *settings) { s.logLevel = l } }

// Config is the configuration of a test node: data in dir, the API and
// libp2p (TCP) on free loopback ports.
func Config(dir string) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.P2P.Resources.MaxMemoryMB = 256
	return cfg
}

// New starts n nodes, each bootstrapped from node 0, waits until every
// routing table holds every other node (up to the DHT bucket size), and
// stops them all when the test ends.
func New(t testing.TB, n int, opts ...Option) *Network {
	t.Helper()
	s := settings{logLevel: slog.LevelWarn}
	for _, o := range opts {
		o(&s)
	}
	nw := &Network{t: t}
	for i := range n {
		cfg := Config(t.TempDir())
		if i > 0 {
			for _, a := range nw.Nodes[0].Host().FullAddrs() {
				cfg.P2P.Bootstrap = append(cfg.P2P.Bootstrap, a.String())
			}
		}
		if s.configure != nil {
			s.configure(i, &cfg)
		}
		log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: s.logLevel})).With("node", i)
		nd, err := node.New(cfg, log)
		if err != nil {
			t.Fatalf("testnet: node %d: %v", i, err)
		}
		if s.beforeStart != nil {
			s.beforeStart(i, nd)
		}
		if err := nd.Start(t.Context()); err != nil {
			nd.Stop()
			t.Fatalf("testnet: start node %d: %v", i, err)
		}
		nw.Nodes = append(nw.Nodes, nd)
		// Registered after the node's TempDir, so it runs before the
		// directory is removed; cleanups run in reverse, so nodes stop in
		// reverse start order.
		t.Cleanup(func() { nw.Stop(i) })
	}
	ctx, cancel := context.WithTimeout(t.Context(), settleTimeout)
	defer cancel()
	want := min(n-1, bucketSize)
	for i, nd := range nw.Nodes {
		if err := nd.WaitRoutingTable(ctx, want); err != nil {
			t.Fatalf("testnet: node %d: %v", i, err)
		}
	}
	return nw
}

// bucketSize is the DHT's k: a routing table is "full" for a small network
// once it holds this many peers.
const bucketSize = 20

// Stop stops node i gracefully. Stopping a stopped node does nothing.
func (nw *Network) Stop(i int) {
	if err := nw.Nodes[i].Stop(); err != nil {
		nw.t.Errorf("testnet: stop node %d: %v", i, err)
	}
}

// String lists the nodes and their peer IDs, for failure messages.
func (nw *Network) String() string {
	s := ""
	for i, nd := range nw.Nodes {
		s += fmt.Sprintf("node %d: %s %s\n", i, nd.PeerID(), nd.APIURL())
	}
	return s
}
