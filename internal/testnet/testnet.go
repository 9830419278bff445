// Package testnet starts real Volo nodes in-process on loopback for tests:
// random ports, temporary data directories, routing tables filled before
// the test runs, every node stopped when it ends.
package testnet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/node"
)

// settleTimeout bounds how long New waits for the routing tables to fill.
const settleTimeout = 2 * time.Minute

// Network is a set of running nodes; node 0 is the bootstrap peer of the others.
type Network struct {
	t     testing.TB
	s     settings
	Nodes []*node.Node
	// Configs are the configurations the nodes were last built from.
	Configs []node.Config
	crashed map[int]bool
}

// Option changes how New builds the network.
type Option func(*settings)

type settings struct {
	configure   func(i int, cfg *node.Config)
	beforeStart func(i int, n *node.Node)
	logLevel    slog.Level
	logTo       io.Writer
	chain       *chainSettings // nil: every node has chain backend none
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

// LogTo sends the nodes' logs to w instead of the test's output, for tests
// that search them.
func LogTo(w io.Writer) Option { return func(s *settings) { s.logTo = w } }

// Config is the configuration of a test node: data in dir, the API and
// libp2p (TCP) on free loopback ports, no chain (see Chain).
func Config(dir string) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.P2P.Resources.MaxMemoryMB = 256
	cfg.Chain.Backend = node.ChainNone
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
	nw := &Network{t: t, s: s, crashed: make(map[int]bool)}
	cfgs := make([]node.Config, n)
	for i := range cfgs {
		cfgs[i] = Config(t.TempDir())
	}
	if s.chain != nil {
		nw.chainConfigs(cfgs)
	}
	for i := range n {
		if i > 0 && s.chain != nil {
			cfgs[i].Chain.Socket = nw.Nodes[0].Devnet().SocketPath()
		}
		nw.start(-1, cfgs[i], true)
	}
	nw.settle(settleTimeout)
	return nw
}

// start builds and starts a node from cfg (bootstrapped from node 0 when
// boot is set and it is not node 0): as node i, or as a new node when i is
// -1. It returns the node's index.
func (nw *Network) start(i int, cfg node.Config, boot bool) int {
	t := nw.t
	t.Helper()
	idx := i
	if idx < 0 {
		idx = len(nw.Nodes)
	}
	if boot && idx > 0 {
		for _, a := range nw.Nodes[0].Host().FullAddrs() {
			cfg.P2P.Bootstrap = append(cfg.P2P.Bootstrap, a.String())
		}
	}
	if nw.s.configure != nil && i < 0 {
		nw.s.configure(idx, &cfg)
	}
	out := nw.s.logTo
	if out == nil {
		out = t.Output()
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: nw.s.logLevel})).With("node", idx)
	nd, err := node.New(cfg, log)
	if err != nil {
		t.Fatalf("testnet: node %d: %v", idx, err)
	}
	if nw.s.beforeStart != nil {
		nw.s.beforeStart(idx, nd)
	}
	if err := nd.Start(t.Context()); err != nil {
		nd.Stop()
		t.Fatalf("testnet: start node %d: %v", idx, err)
	}
	if i < 0 {
		nw.Nodes = append(nw.Nodes, nd)
		nw.Configs = append(nw.Configs, cfg)
		// Registered after the node's TempDir, so it runs before the
		// directory is removed; cleanups run in reverse, so nodes stop in
		// reverse start order.
		t.Cleanup(func() { nw.Stop(idx) })
	} else {
		nw.Nodes[i], nw.Configs[i] = nd, cfg
	}
	return idx
}

// settle waits until every running node's routing table holds every other
// running node (up to the DHT bucket size).
func (nw *Network) settle(timeout time.Duration) {
	nw.t.Helper()
	ctx, cancel := context.WithTimeout(nw.t.Context(), timeout)
	defer cancel()
	want := min(len(nw.Nodes)-1-len(nw.crashed), bucketSize)
	for i, nd := range nw.Nodes {
		if nw.crashed[i] {
			continue
		}
		if err := nd.WaitRoutingTable(ctx, want); err != nil {
			nw.t.Fatalf("testnet: node %d: %v", i, err)
		}
	}
}

// Add starts one more node, bootstrapped from node 0, waits until the
// routing tables hold it, and returns its index.
func (nw *Network) Add() int {
	nw.t.Helper()
	i := nw.start(-1, Config(nw.t.TempDir()), true)
	nw.settle(settleTimeout)
	return i
}

// Restart stops node i gracefully (if it runs: see Stop) and starts it
// again on the same data directory, libp2p and API ports, bootstrapped
// from every other running node.
func (nw *Network) Restart(i int) {
	nw.t.Helper()
	nw.Stop(i)
	cfg := nw.Configs[i]
	cfg.P2P.Bootstrap = nil
	for j, nd := range nw.Nodes {
		if j == i || nw.crashed[j] {
			continue
		}
		for _, a := range nd.Host().FullAddrs() {
			cfg.P2P.Bootstrap = append(cfg.P2P.Bootstrap, a.String())
		}
	}
	nw.start(i, cfg, false)
}

// Settle waits until the routing tables of the running nodes are full
// again, after restarts or crashes.
func (nw *Network) Settle() { nw.t.Helper(); nw.settle(settleTimeout) }

// HardStop crashes node i as the network sees it: its libp2p host closes
// at once, with no service stopped, nothing flushed and its database left
// open (it is released when the test ends). Other nodes see its
// connections drop, as after kill -9.
func (nw *Network) HardStop(i int) {
	nw.t.Helper()
	nw.crashed[i] = true
	if err := nw.Nodes[i].Host().Libp2p().Close(); err != nil {
		nw.t.Fatalf("testnet: hard stop node %d: %v", i, err)
	}
}

// bucketSize is the DHT's k: a routing table is "full" for a small network
// once it holds this many peers.
const bucketSize = 20

// Stop stops node i gracefully, keeping its libp2p and API addresses for
// Restart. Stopping a stopped node does nothing; a node that was
// hard-stopped is released without checking errors.
func (nw *Network) Stop(i int) {
	nd := nw.Nodes[i]
	if addrs := nd.Host().Libp2p().Network().ListenAddresses(); len(addrs) > 0 {
		cfg := &nw.Configs[i]
		cfg.P2P.Listen = nil
		for _, a := range addrs {
			cfg.P2P.Listen = append(cfg.P2P.Listen, a.String())
		}
		cfg.API.Listen = strings.TrimPrefix(nd.APIURL(), "http://")
	}
	if nw.crashed[i] {
		nw.Nodes[i].Stop()
		return
	}
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
