package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

// Two homes on a 2-node network, with the CLI only: A sends to B through
// node 0 while B is offline; B's "inbox" through node 1 shows it once,
// a second "inbox" finds nothing, and "history" on both sides has it.
func TestCLISendInbox(t *testing.T) {
	nw := testnet.New(t, 2, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	root := t.TempDir()
	a := newCLI(t, filepath.Join(root, "a"), map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase A"})
	b := newCLI(t, filepath.Join(root, "b"), map[string]string{EnvNode: nw.Nodes[1].APIURL(), EnvPassphrase: "passphrase B"})
	out, err := a.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	userA := field(t, userLine, out)
	if out, err = b.run(t.Context(), "register"); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	userB := field(t, userLine, out)
	a.waitOutput("B's chain on node 0", func(s string) bool { return strings.Contains(s, "verified") }, "lookup", userB)
	b.waitOutput("A's chain on node 1", func(s string) bool { return strings.Contains(s, "verified") }, "lookup", userA)

	const text = "hello from the command line"
	if out, err = a.run(t.Context(), "send", userB, text); err != nil || !strings.Contains(out, "Sent to 1 device.") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	if out, err = a.run(t.Context(), "send", "nobody", text); err == nil || !strings.Contains(err.Error(), "not a user ID") {
		t.Fatalf("send to a bad user ID: %v\n%s", err, out)
	}
	out, err = b.run(t.Context(), "inbox")
	if err != nil || strings.Count(out, text) != 1 || !strings.Contains(out, userA) {
		t.Fatalf("inbox: %v\n%s", err, out)
	}
	if out, err = b.run(t.Context(), "inbox"); err != nil || !strings.Contains(out, "No new messages.") {
		t.Fatalf("second inbox: %v\n%s", err, out)
	}
	if out, err = b.run(t.Context(), "history", userA); err != nil || !strings.Contains(out, text) || !strings.Contains(out, "them") {
		t.Fatalf("history on B: %v\n%s", err, out)
	}
	if out, err = a.run(t.Context(), "history", userB); err != nil || !strings.Contains(out, text) || !strings.Contains(out, "me") {
		t.Fatalf("history on A: %v\n%s", err, out)
	}
	b.vars[EnvPassphrase] = "wrong"
	if _, err = b.run(t.Context(), "history", userA); err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("history with a wrong passphrase: %v", err)
	}
}
