package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as volo-node: with VOLO_NODE_MAIN=1 it runs main
// with its arguments, so the tests drive the real command in a subprocess
// without building it twice.
func TestMain(m *testing.M) {
	if os.Getenv("VOLO_NODE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hangGuard bounds how long a test waits on a subprocess before calling it
// hung; it is not a timing assertion.
const hangGuard = 2 * time.Minute

type proc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *strings.Builder
	done   chan struct{}
}

func startNode(t testing.TB, args ...string) *proc {
	t.Helper()
	return startNodeIn(t, "", args...)
}

// startNodeIn starts volo-node with args in the working directory dir
// ("": the test's).
func startNodeIn(t testing.TB, dir string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VOLO_NODE_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: bufio.NewReader(out), stderr: &strings.Builder{}, done: make(chan struct{})}
	errPipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { io.Copy(p.stderr, errPipe); close(p.done) }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// apiURL reads the node's stdout until it prints its API URL.
func (p *proc) apiURL(t testing.TB) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		for {
			line, err := p.stdout.ReadString('\n')
			if f := strings.Fields(line); len(f) == 2 && f[0] == "api" {
				found <- f[1]
				io.Copy(io.Discard, p.stdout)
				return
			}
			if err != nil {
				close(found)
				return
			}
		}
	}()
	select {
	case u, ok := <-found:
		if !ok {
			t.Fatalf("node exited before printing its API URL; stderr:\n%s", p.wait(t))
		}
		return u
	case <-time.After(hangGuard):
		t.Fatal("node did not print its API URL")
	}
	return ""
}

// wait waits for the process to exit and returns its stderr.
func (p *proc) wait(t testing.TB) string {
	t.Helper()
	exited := make(chan error, 1)
	go func() { <-p.done; exited <- p.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(hangGuard):
		p.cmd.Process.Kill()
		t.Fatal("node did not exit")
	}
	return p.stderr.String()
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

func TestRunStopRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--log-format", "json"}

	runOnce := func() (peerID, stderr string) {
		p := startNode(t, args...)
		url := p.apiURL(t)
		var health map[string]any
		if code := getJSON(t, url+"/healthz", &health); code != http.StatusOK {
			t.Fatalf("healthz: %d %v", code, health)
		}
		var info struct {
			PeerID string `json:"peer_id"`
		}
		getJSON(t, url+"/v1/node", &info)
		if info.PeerID == "" {
			t.Fatal("/v1/node reports no peer ID")
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		stderr = p.wait(t)
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, stderr)
		}
		if !strings.Contains(stderr, `"msg":"node stopped"`) {
			t.Errorf("no orderly stop in the log:\n%s", stderr)
		}
		return info.PeerID, stderr
	}

	id1, log1 := runOnce()
	if !strings.Contains(log1, "created node identity") {
		t.Errorf("first run did not create an identity:\n%s", log1)
	}
	if _, err := os.Stat(filepath.Join(dir, "store", "LOCK")); !os.IsNotExist(err) {
		t.Errorf("badger LOCK file left behind after SIGTERM: %v", err)
	}
	id2, log2 := runOnce()
	if id1 != id2 {
		t.Errorf("peer ID changed across restart: %s then %s", id1, id2)
	}
	if strings.Contains(log2, "created node identity") || strings.Contains(log2, "did not stop cleanly") {
		t.Errorf("second run recreated the identity or found an unclean store:\n%s", log2)
	}
}

func TestBadConfigExitsNonZero(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.toml")
	os.WriteFile(unknown, []byte("[p2p]\nlisten_addrs = []\n"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--config", unknown}, `unknown field "p2p.listen_addrs"`},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.toml")}, "nope.toml"},
		{"malformed multiaddr", []string{"--p2p-listen", "/ip4/127.0.0.1/tcpp/1"}, `p2p.listen[1]: bad multiaddr "/ip4/127.0.0.1/tcpp/1"`},
		{"bad bootstrap", []string{"--bootstrap", "/ip4/127.0.0.1/tcp/4001"}, "p2p.bootstrap[0]"},
		{"api port in use", []string{"--api-listen", busy.Addr().String()}, "api: listen on " + busy.Addr().String()},
		{"p2p port in use", []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/" + busyPort}, "p2p: listen on /ip4/127.0.0.1/tcp/" + busyPort},
		{"bad log level", []string{"--log-level", "loud"}, "log.level"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--data-dir", filepath.Join(dir, strconv.Itoa(i)),
				"--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"}, c.args...)
			p := startNode(t, args...)
			stderr := p.wait(t)
			if code := p.cmd.ProcessState.ExitCode(); code == 0 {
				t.Fatalf("exit code 0; stderr:\n%s", stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr does not mention %q:\n%s", c.want, stderr)
			}
		})
	}
}

func TestKeygenThenRunKeepsPeerID(t *testing.T) {
	dir := t.TempDir()
	p := startNode(t, "keygen", "--data-dir", dir)
	line, _ := p.stdout.ReadString('\n')
	p.wait(t)
	generated := strings.TrimSpace(line)
	if !strings.HasPrefix(generated, "12D3KooW") {
		t.Fatalf("keygen printed %q", line)
	}
	p = startNode(t, "--data-dir", dir, "--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	url := p.apiURL(t)
	var info struct {
		PeerID string `json:"peer_id"`
	}
	getJSON(t, url+"/v1/node", &info)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t)
	if info.PeerID != generated {
		t.Errorf("node runs as %s, keygen made %s", info.PeerID, generated)
	}
}
