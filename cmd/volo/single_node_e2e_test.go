package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// "volo-node" run with no configuration (the embedded dev.toml) is a whole
// network: it says at start that it is a network of one; two people
// register on it, one sends, the other's inbox shows the message and the
// send says on how many relays it is; a backup made on it is restored on
// a third home linked to the same user.
func TestCLISingleNodeNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs volo-node")
	}
	root := t.TempDir()
	port := freePortPair(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(buildNode(t), "run", "--data-dir", filepath.Join(root, "data"),
		"--api-listen", fmt.Sprintf("127.0.0.1:%d", port), "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	stdout := &syncBuffer{lines: make(chan string, 64)}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for started := false; !started; {
		select {
		case line := <-stdout.lines:
			started = strings.TrimSpace(line) == "api      "+url
		case <-time.After(e2eTimeout):
			t.Fatalf("volo-node did not start:\n%s\n%s", stdout, logs)
		}
	}
	waitText(t, "volo-node's log", logs, "this node is a network of one", "messages are stored on 1 of 1 relays, backups on 1 of 1 storage nodes")

	clis, users := people(t, []string{url}, "alice", "bob")
	alice, bob := clis[0], clis[1]
	out, err := alice.run(t.Context(), "send", users[1], "hello bob, on one node")
	if err != nil || !strings.Contains(out, "Sent to 1 device.\nStored on 1 of 1 relays.\n") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	out, err = bob.run(t.Context(), "inbox")
	if err != nil || !strings.Contains(out, users[0]+"  them  hello bob, on one node") {
		t.Fatalf("inbox: %v\n%s", err, out)
	}

	bob.vars[EnvBackupPassword] = "bob's backup password"
	if out, err := bob.run(t.Context(), "backup", "-q"); err != nil || !strings.Contains(out, "Backed up 1 messages of 1 conversations") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	laptop := newCLI(t, filepath.Join(root, "bob-laptop"), map[string]string{EnvNode: url, EnvPassphrase: "passphrase of bob's laptop",
		EnvBackupPassword: "bob's backup password"})
	linkCLI(t, bob, laptop)
	if out, err := laptop.run(t.Context(), "restore", "-q"); err != nil || !strings.Contains(out, "1 new on this device") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := laptop.run(t.Context(), "history", users[0]); err != nil || !strings.Contains(out, "them  hello bob, on one node") {
		t.Fatalf("history after the restore: %v\n%s", err, out)
	}
}
