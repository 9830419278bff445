package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/volo-chat/volo/node"
)

// addNodeTries bounds how many node numbers past the devnet's last the
// add-node command tries before it gives up finding free ports.
const addNodeTries = 100

// addNodeCommand is the volo-node command line that adds one node to the
// running devnet nodes, started from base with the configuration file
// configFile ("" for the embedded one). It names node k of the devnet's
// own scheme (data directory <data-dir>/devnet-N/node-k, the configured
// ports plus k), for the first k ≥ N whose data directory no node has open
// and whose ports neither a devnet node holds nor anything else has taken,
// and bootstraps from node 0. With chain.backend = "devnet" the added node
// runs a Cardano devnet of its own: only the nodes started with node 0 are
// funded on node 0's.
func addNodeCommand(base node.Config, configFile string, nodes []*node.Node) ([]string, error) {
	if len(nodes) == 0 {
		return nil, errors.New("no node runs")
	}
	held := heldPorts(nodes)
	if base.Chain.Backend == node.ChainDevnet {
		if p := hostPortNumber(base.Chain.Devnet.NodeToNodeListen); p != 0 && held[p] {
			return nil, fmt.Errorf("its Cardano devnet would listen on chain.devnet.node_to_node_listen = %q, which node 0 holds: give it a configuration where that is \"\" or port 0", base.Chain.Devnet.NodeToNodeListen)
		}
	}
	n := len(nodes)
	for k := n; k < n+addNodeTries; k++ {
		cfg, err := devnetConfig(base, n, k)
		if err != nil {
			return nil, err
		}
		if dataDirOpen(cfg.DataDir) || !portsFree(cfg, held) {
			continue
		}
		args := []string{"volo-node"}
		if configFile != "" {
			args = append(args, "--config", configFile)
		}
		args = append(args, "--data-dir", cfg.DataDir, "--api-listen", cfg.API.Listen)
		for _, a := range cfg.P2P.Listen {
			args = append(args, "--p2p-listen", a)
		}
		return append(args, "--bootstrap", nodes[0].Host().FullAddrs()[0].String()), nil
	}
	return nil, fmt.Errorf("the ports of nodes %d to %d are taken: run the devnet with --api-listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 for free ports", n, n+addNodeTries-1)
}

// dataDirOpen reports whether a node has the database in dir open (badger
// keeps store/LOCK while it runs; a node killed leaves it behind too).
func dataDirOpen(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, node.StoreDir, "LOCK"))
	return err == nil
}

// heldPorts are the TCP and UDP ports the devnet's nodes listen on: their
// APIs, libp2p and node 0's Cardano devnet.
func heldPorts(nodes []*node.Node) map[int]bool {
	held := map[int]bool{}
	for _, nd := range nodes {
		if u, err := url.Parse(nd.APIURL()); err == nil {
			held[hostPortNumber(u.Host)] = true
		}
		for _, a := range nd.Host().FullAddrs() {
			if _, _, port, ok := multiaddrSocket(a); ok {
				held[port] = true
			}
		}
		if d := nd.Devnet(); d != nil {
			held[hostPortNumber(d.NodeToNodeAddr())] = true
		}
	}
	delete(held, 0)
	return held
}

// portsFree reports whether every fixed port cfg listens on is free: not
// held by the devnet, and open to a listener of this process now.
func portsFree(cfg node.Config, held map[int]bool) bool {
	free := func(network, addr string, port int) bool {
		if port == 0 {
			return true
		}
		if held[port] {
			return false
		}
		if network == "udp" {
			c, err := net.ListenPacket(network, addr)
			if err != nil {
				return false
			}
			return c.Close() == nil
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return false
		}
		return l.Close() == nil
	}
	if !free("tcp", cfg.API.Listen, hostPortNumber(cfg.API.Listen)) {
		return false
	}
	for _, s := range cfg.P2P.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return false
		}
		if network, addr, port, ok := multiaddrSocket(a); ok && !free(network, addr, port) {
			return false
		}
	}
	return true
}

// multiaddrSocket is the network ("tcp" or "udp"), HOST:PORT and port of
// an IP multiaddr; ok is false for other addresses.
func multiaddrSocket(a ma.Multiaddr) (network, addr string, port int, ok bool) {
	var host string
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_IP4, ma.P_IP6:
			host = c.Value()
		case ma.P_TCP, ma.P_UDP:
			if network != "" {
				continue
			}
			p, err := strconv.Atoi(c.Value())
			if err != nil {
				return "", "", 0, false
			}
			network, port = c.Protocol().Name, p
		}
	}
	if host == "" || network == "" {
		return "", "", 0, false
	}
	return network, net.JoinHostPort(host, strconv.Itoa(port)), port, true
}

// hostPortNumber is the port of HOST:PORT, 0 when there is none.
func hostPortNumber(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return p
}

// shellJoin joins args into one line a POSIX shell splits back into args.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
