package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/volo-chat/volo/configs"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
)

// Devnets of different sizes run one after the other in one data
// directory, in the README's order (-n 3, then -n 2), and a size run again
// finds its network as it left it: same node identity, same users.
func TestDevnetSizesShareDataDir(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	run := func(n int, during func([]*node.Node)) {
		t.Helper()
		nodes, err := startDevnet(t.Context(), cfg, n, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("devnet -n %d: %v", n, err)
		}
		during(nodes)
		if err := stopAll(nodes); err != nil {
			t.Fatalf("devnet -n %d: stop: %v", n, err)
		}
	}
	var (
		user  ident.UserID
		first peer.ID
	)
	run(3, func(nodes []*node.Node) {
		first = nodes[0].PeerID()
		user = registerUser(t, nodes[0].APIURL(), newDevice(t)).User()
	})
	run(2, func([]*node.Node) {})
	run(3, func(nodes []*node.Node) {
		if got := nodes[0].PeerID(); got != first {
			t.Errorf("node 0 of the 3-node devnet runs as %s, first ran as %s", got, first)
		}
		if u, body := userAt(t, nodes[0].APIURL(), user); u.UserID != user.String() {
			t.Errorf("the 3-node devnet lost user %s: %s", user, body)
		}
	})
}

// The command a devnet prints to add a node runs as printed: in the
// environment the devnet ran in (its configuration: here dev.toml with
// ports the test picked, standing for the defaults), it names no port the
// devnet holds, starts, and joins the devnet.
func TestDevnetAddNodeCommandRuns(t *testing.T) {
	dir := t.TempDir()
	apiPort, p2pPort := freePortRange(t, 3), freePortRange(t, 3)
	doc, err := configs.Get(configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for old, repl := range map[string]string{
		`data_dir = "./volo-data"`:  fmt.Sprintf("data_dir = %q", dir),
		`listen = "127.0.0.1:8080"`: fmt.Sprintf(`listen = "127.0.0.1:%d"`, apiPort),
		`listen = ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]`: fmt.Sprintf(`listen = ["/ip4/127.0.0.1/tcp/%d", "/ip4/127.0.0.1/udp/%d/quic-v1"]`, p2pPort, p2pPort),
	} {
		if strings.Count(text, old) != 1 {
			t.Fatalf("%s lacks %q", configs.Default, old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	confFile := filepath.Join(dir, "env.toml")
	if err := os.WriteFile(confFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := node.DecodeConfig(node.DefaultConfig(), confFile, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := startDevnet(t.Context(), base, 2, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll(nodes)
	var out strings.Builder
	printDevnet(&out, base, "", nodes)
	args := addCommandArgs(t, out.String())

	held := map[int]string{}
	for i, n := range nodes {
		u, _ := url.Parse(n.APIURL())
		p, _ := strconv.Atoi(u.Port())
		held[p] = fmt.Sprintf("node %d's API", i)
		for _, a := range n.Host().FullAddrs() {
			for _, proto := range []int{ma.P_TCP, ma.P_UDP} {
				if v, err := a.ValueForProtocol(proto); err == nil {
					p, _ := strconv.Atoi(v)
					held[p] = fmt.Sprintf("node %d's libp2p", i)
				}
			}
		}
	}
	apiListen, p2pListen := base.API.Listen, base.P2P.Listen // what the command does not set
	if v := flagValues(args, "--api-listen"); len(v) > 0 {
		apiListen = v[len(v)-1]
	}
	if v := flagValues(args, "--p2p-listen"); len(v) > 0 {
		p2pListen = v
	}
	_, port, _ := net.SplitHostPort(apiListen)
	if p, _ := strconv.Atoi(port); held[p] != "" {
		t.Errorf("the command's API port %d is %s:\n%s", p, held[p], out.String())
	}
	for _, s := range p2pListen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, proto := range []int{ma.P_TCP, ma.P_UDP} {
			if v, err := a.ValueForProtocol(proto); err == nil {
				if p, _ := strconv.Atoi(v); held[p] != "" {
					t.Errorf("the command's libp2p port %d is %s:\n%s", p, held[p], out.String())
				}
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	p := startNodeIn(t, dir, append([]string{"--config", confFile}, args[1:]...)...)
	apiURL := p.apiURL(t)
	var info struct {
		PeerID string `json:"peer_id"`
	}
	getJSON(t, apiURL+"/v1/node", &info)
	added, err := peer.Decode(info.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, hangGuard, func() error {
		if !slices.Contains(nodes[0].Host().RoutingTablePeers(), added) {
			return errors.New("node 0's routing table lacks the added node")
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGTERM)
	if stderr := p.wait(t); p.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("added node: exit %d\n%s", p.cmd.ProcessState.ExitCode(), stderr)
	}
}

// addCommandArgs finds the volo-node command line that runs a node (flags
// right after "volo-node") in a devnet's output and splits it into words.
func addCommandArgs(t *testing.T, out string) []string {
	t.Helper()
	for line := range strings.Lines(out) {
		_, cmd, ok := strings.Cut(line, "volo-node ")
		if !ok || !strings.HasPrefix(cmd, "-") {
			continue
		}
		if strings.ContainsAny(cmd, `'"\`) {
			t.Fatalf("the test splits commands on spaces only: %s", line)
		}
		return append([]string{"volo-node"}, strings.Fields(cmd)...)
	}
	t.Fatalf("no command to add a node in the devnet's output:\n%s", out)
	return nil
}

// flagValues is every value given to flag in args.
func flagValues(args []string, flag string) []string {
	var v []string
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			v = append(v, args[i+1])
		} else if val, ok := strings.CutPrefix(a, flag+"="); ok {
			v = append(v, val)
		}
	}
	return v
}

// freePortRange finds n consecutive ports free for TCP and UDP on
// 127.0.0.1, and returns the first.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		first := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if first+n > 65535 {
			continue
		}
		free := true
		for p := first; p < first+n && free; p++ {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
			tl, err := net.Listen("tcp", addr)
			if err != nil {
				free = false
				continue
			}
			ul, err := net.ListenPacket("udp", addr)
			tl.Close()
			if err != nil {
				free = false
				continue
			}
			ul.Close()
		}
		if free {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports on 127.0.0.1", n)
	return 0
}
