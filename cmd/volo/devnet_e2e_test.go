package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/tstest"
)

// devnet is "volo-node devnet -n 2" run as its own process, so that the
// test can kill it (SIGKILL) and start it again on the same data
// directory and API ports.
type devnet struct {
	t       *testing.T
	bin     string
	dataDir string
	port    int
	cmd     *exec.Cmd
}

// buildNode builds the volo-node command into a temporary directory.
func buildNode(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build volo-node: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "volo-node")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/volo-chat/volo/cmd/volo-node").CombinedOutput()
	if err != nil {
		t.Fatalf("build volo-node: %v\n%s", err, out)
	}
	return bin
}

// freePortPair finds a port p such that p and p+1 are free on 127.0.0.1
// (devnet node i listens on the API port plus i).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}

// start runs the devnet and waits until it prints both nodes' API URLs.
func (d *devnet) start() {
	d.t.Helper()
	d.cmd = exec.Command(d.bin, "devnet", "-n", "2", "--data-dir", d.dataDir,
		"--api-listen", fmt.Sprintf("127.0.0.1:%d", d.port), "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	logf, err := os.OpenFile(filepath.Join(d.dataDir, "..", "devnet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { logf.Close() })
	d.cmd.Stderr = logf
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	cmd := d.cmd
	d.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		closed := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "node-1  api ") && !closed {
				close(ready)
				closed = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(e2eTimeout):
		d.t.Fatalf("the devnet did not start; its log is %s", filepath.Join(d.dataDir, "..", "devnet.log"))
	}
}

// kill stops the devnet as kill -9 does.
func (d *devnet) kill() {
	d.t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd.Wait()
}

func (d *devnet) url(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", d.port+i) }

// The CLI end to end on "volo-node devnet -n 2": Alice chats with Bob in
// "volo chat" while Carol sends to her; Alice sees Carol's message
// without knowing her ID, and "volo chats" lists both conversations. The
// devnet is killed and started again while Alice types three lines: her
// chat says the connection dropped, keeps the lines, says when it is
// back; the lines reach Bob after it returns and are marked delivered.
func TestCLIDevnetDailyUse(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs volo-node")
	}
	root := t.TempDir()
	d := &devnet{t: t, bin: buildNode(t), dataDir: filepath.Join(root, "data"), port: freePortPair(t)}
	d.start()
	clis, users := people(t, []string{d.url(0), d.url(1), d.url(1)}, "alice", "bob", "carol")
	alice, bob, carol := clis[0], clis[1], clis[2]
	userA, userB, userC := users[0], users[1], users[2]

	bobTyping, bobDone := chatting(t, bob, userA)
	aliceTyping, aliceDone := chatting(t, alice, userB)
	aliceErr := alice.env.stderr.(*syncBuffer)
	waitText(t, "alice's chat", aliceErr, "Connected to "+d.url(0))
	waitText(t, "bob's chat", bob.env.stderr.(*syncBuffer), "Connected to "+d.url(1))
	fmt.Fprintln(aliceTyping, "hello bob")
	waitText(t, "bob's chat", bob.stdout, userA+"  them  hello bob")
	if out, err := carol.run(t.Context(), "send", userA, "hi alice, carol here"); err != nil {
		t.Fatalf("carol's send: %v\n%s", err, out)
	}
	waitText(t, "alice's chat", alice.stdout, userC+"  them  hi alice, carol here")

	d.kill()
	waitText(t, "alice's chat", aliceErr, "Not connected to "+d.url(0))
	lines := []string{"one while the node is down", "two while the node is down", "three while the node is down"}
	for _, l := range lines {
		fmt.Fprintln(aliceTyping, l)
	}
	tstest.WaitFor(t, e2eTimeout, func() error {
		if n := strings.Count(aliceErr.String(), "(queued: not connected"); n != 3 {
			return fmt.Errorf("%d lines queued", n)
		}
		return nil
	})
	d.start()
	waitText(t, "alice's chat", aliceErr, "sending 3 queued messages")
	for _, l := range lines {
		waitText(t, "bob's chat", bob.stdout, userA+"  them  "+l)
	}
	aliceTyping.Close()
	bobTyping.Close()
	if err := <-aliceDone; err != nil {
		t.Fatalf("alice's chat: %v", err)
	}
	if err := <-bobDone; err != nil {
		t.Fatalf("bob's chat: %v", err)
	}

	out, err := alice.run(t.Context(), "chats")
	if err != nil || !strings.Contains(out, userB) || !strings.Contains(out, userC) {
		t.Fatalf("chats: %v\n%s", err, out)
	}
	// Bob's chat confirmed them; what Alice's chat did not get yet, an
	// inbox fetches.
	tstest.WaitFor(t, e2eTimeout, func() error {
		out, err := alice.run(t.Context(), "history", userB)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if !strings.Contains(out, "me    "+l+"  [delivered]") {
				alice.run(t.Context(), "inbox")
				return fmt.Errorf("%q not delivered in:\n%s", l, out)
			}
		}
		return nil
	})
}
