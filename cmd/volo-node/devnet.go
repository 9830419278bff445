package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/node"
)

// devnetSettle bounds how long devnet waits for the routing tables to fill
// before it prints the network anyway.
const devnetSettle = 30 * time.Second

func newDevnetCmd(f *flags, stdout, stderr io.Writer) *cobra.Command {
	var n int
	cmd := &cobra.Command{
		Use:   "devnet",
		Short: "Run N nodes in one process on this machine, joined to each other",
		Long: `devnet runs N nodes in this process. Node i keeps its data in
<data-dir>/devnet-N/node-i (each size its own directory, so devnets of
different sizes share a data directory without touching each other's data)
and listens on the configured ports plus i (port 0 stays 0: a free port
each). Nodes 1..N-1 bootstrap from node 0. It prints each node's API URL and
peer ID, the volo-node command that adds one more node, and runs until
SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, *f)
			if err != nil {
				return err
			}
			log := newLogger(cfg, stderr)
			nodes, err := startDevnet(cmd.Context(), cfg, n, log)
			if err != nil {
				return err
			}
			printDevnet(stdout, cfg, f.config, nodes)
			<-cmd.Context().Done()
			log.Info("shutting down devnet")
			return stopAll(nodes)
		},
	}
	cmd.Flags().IntVarP(&n, "nodes", "n", 3, "number of nodes")
	return cmd
}

// devnetDir is where a devnet of n nodes keeps its nodes' data directories.
// Each size has its own: node 0's embedded Cardano devnet funds the payment
// keys of nodes 1..n-1 at its genesis, so a chain made for one size cannot
// be replayed for another, and a devnet of another size must not touch it.
func devnetDir(dataDir string, n int) string {
	return filepath.Join(dataDir, "devnet-"+strconv.Itoa(n))
}

// devnetConfig is the configuration of node i of a devnet of n nodes built
// from base.
func devnetConfig(base node.Config, n, i int) (node.Config, error) {
	cfg := base
	cfg.DataDir = filepath.Join(devnetDir(base.DataDir, n), "node-"+strconv.Itoa(i))
	api, err := offsetHostPort(base.API.Listen, i)
	if err != nil {
		return node.Config{}, fmt.Errorf("api.listen: %w", err)
	}
	cfg.API.Listen = api
	cfg.P2P.Listen = make([]string, len(base.P2P.Listen))
	for j, a := range base.P2P.Listen {
		if cfg.P2P.Listen[j], err = offsetMultiaddrPort(a, i); err != nil {
			return node.Config{}, fmt.Errorf("p2p.listen[%d]: %w", j, err)
		}
	}
	cfg.P2P.Bootstrap = append([]string(nil), base.P2P.Bootstrap...)
	return cfg, nil
}

// startDevnet starts n nodes; every node after the first bootstraps from
// the first. It returns once every routing table holds all other nodes, or
// after devnetSettle with a warning.
func startDevnet(ctx context.Context, base node.Config, n int, log *slog.Logger) ([]*node.Node, error) {
	if n < 1 {
		return nil, errors.New("devnet: -n must be at least 1")
	}
	warnOldDevnetLayout(base.DataDir, n, log)
	cfgs := make([]node.Config, n)
	for i := range cfgs {
		var err error
		if cfgs[i], err = devnetConfig(base, n, i); err != nil {
			return nil, err
		}
		if err := checkFiles(cfgs[i]); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
	}
	if base.Chain.Backend == node.ChainDevnet {
		if err := devnetChain(cfgs); err != nil {
			return nil, err
		}
	}
	var nodes []*node.Node
	for i, cfg := range cfgs {
		if i > 0 {
			for _, a := range nodes[0].Host().FullAddrs() {
				cfg.P2P.Bootstrap = append(cfg.P2P.Bootstrap, a.String())
			}
			if d := nodes[0].Devnet(); d != nil {
				cfg.Chain.Socket = d.SocketPath()
			}
		}
		nd, err := node.New(cfg, log.With("node", i))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("node %d: %w", i, err), stopAll(nodes))
		}
		if err := nd.Start(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("node %d: %w", i, err), stopAll(nodes))
		}
		nodes = append(nodes, nd)
	}
	wctx, cancel := context.WithTimeout(ctx, devnetSettle)
	defer cancel()
	for i, nd := range nodes {
		if err := nd.WaitRoutingTable(wctx, n-1); err != nil {
			log.Warn("devnet: routing table not full yet", "node", i, "err", err)
		}
	}
	return nodes, nil
}

// devnetChain shares node 0's embedded Cardano devnet: node 0 runs it (also
// on a loopback node-to-node port), every other node gets a payment key in
// its data directory (kept across runs), funded at the devnet's genesis,
// and anchors through node 0's socket (set once node 0 runs).
func devnetChain(cfgs []node.Config) error {
	if cfgs[0].Chain.Devnet.NodeToNodeListen == "" {
		cfgs[0].Chain.Devnet.NodeToNodeListen = "127.0.0.1:0"
	}
	for i := 1; i < len(cfgs); i++ {
		cfg := &cfgs[i]
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("node %d: data_dir: %w", i, err)
		}
		path := filepath.Join(cfg.DataDir, devnetPaymentKey)
		key, err := cardano.ReadSigningKey(path)
		if errors.Is(err, fs.ErrNotExist) {
			if key, err = cardano.GenerateSigningKey(); err == nil {
				err = cardano.WriteSigningKey(path, key)
			}
		}
		if err != nil {
			return fmt.Errorf("node %d: payment key: %w", i, err)
		}
		addr, err := cardano.EnterpriseAddress(key.Public().(ed25519.PublicKey), cardano.Devnet)
		if err != nil {
			return fmt.Errorf("node %d: payment address: %w", i, err)
		}
		cfgs[0].Chain.Devnet.FundAddresses = append(slices.Clone(cfgs[0].Chain.Devnet.FundAddresses), addr.String())
		cfg.Chain.Backend = node.ChainCardano
		cfg.Chain.Network = cardano.Devnet.Name
		cfg.Chain.PaymentKey = path
	}
	return nil
}

// devnetPaymentKey is the payment key of nodes 1..n-1 of a devnet, in
// their data directories.
const devnetPaymentKey = "payment.skey"

// warnOldDevnetLayout says where the data of a devnet made before each
// size had its own directory (<data-dir>/node-i) is: kept, not used.
func warnOldDevnetLayout(dataDir string, n int, log *slog.Logger) {
	old, _ := filepath.Glob(filepath.Join(dataDir, "node-[0-9]*"))
	if len(old) == 0 {
		return
	}
	log.Warn("devnet: node directories of an earlier volo-node are kept but not used; to run that network again, move them into "+
		filepath.Join(dataDir, "devnet-<number of nodes>"), "dirs", old, "this_devnet", devnetDir(dataDir, n))
}

// printDevnet prints each node's API URL and peer ID, the command that
// adds a node to the devnet started from base and configFile, and how to
// verify a user.
func printDevnet(w io.Writer, base node.Config, configFile string, nodes []*node.Node) {
	for i, nd := range nodes {
		fmt.Fprintf(w, "node-%d  api %s  peer %s\n", i, nd.APIURL(), nd.PeerID())
	}
	if len(nodes) == 0 {
		return
	}
	if add, err := addNodeCommand(base, configFile, nodes); err != nil {
		fmt.Fprintf(w, "no command to add a node: %v\n", err)
	} else {
		fmt.Fprintf(w, "add a node with: %s\n", shellJoin(add))
	}
	printVerifyHint(w, nodes[0])
}

// printVerifyHint says where n's embedded Cardano devnet listens and how
// to verify a user against it.
func printVerifyHint(w io.Writer, n *node.Node) {
	d := n.Devnet()
	if d == nil {
		return
	}
	fmt.Fprintf(w, "cardano devnet  socket %s", d.SocketPath())
	if a := d.NodeToNodeAddr(); a != "" {
		fmt.Fprintf(w, "  relay %s", a)
	}
	fmt.Fprintf(w, "  magic %d\n", d.Magic())
	fmt.Fprintf(w, "verify a user with: volo-node verify --user USER_ID --node-url %s --cardano-socket %s --network devnet --min-depth %d\n",
		n.APIURL(), d.SocketPath(), n.Config().Chain.ConfirmationDepth)
}

// stopAll stops nodes in reverse start order.
func stopAll(nodes []*node.Node) error {
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := nodes[i].Stop(); err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// offsetHostPort adds i to the port of HOST:PORT, unless it is 0.
func offsetHostPort(addr string, i int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("bad port %q", port)
	}
	if p == 0 {
		return addr, nil
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i)), nil
}

// offsetMultiaddrPort adds i to the TCP or UDP port of a multiaddr,
// unless it is 0.
func offsetMultiaddrPort(s string, i int) (string, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return "", err
	}
	out := make(ma.Multiaddr, 0, len(a))
	for _, c := range a {
		code := c.Protocol().Code
		if code == ma.P_TCP || code == ma.P_UDP {
			p, err := strconv.Atoi(c.Value())
			if err != nil {
				return "", err
			}
			if p != 0 {
				nc, err := ma.NewComponent(c.Protocol().Name, strconv.Itoa(p+i))
				if err != nil {
					return "", err
				}
				c = *nc
			}
		}
		out = append(out, c)
	}
	return out.String(), nil
}
