package main

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

var recoveryLine = regexp.MustCompile(`(?m)^  ([a-z2-7]{4}(?:-[a-z2-7]{1,4}){12})$`)

// "volo register" shows a recovery key once; "volo recover" revokes a
// device with it and needs no passphrase; a wrong key changes nothing.
func TestCLIRecoverRevokesADevice(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	root := t.TempDir()
	a := newCLI(t, root+"/a", map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of A"})
	b := newCLI(t, root+"/b", map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of B"})
	out, err := a.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	key := field(t, recoveryLine, out)
	other := newCLI(t, root+"/other", map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of O"})
	otherOut, err := other.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, otherOut)
	}
	if field(t, recoveryLine, otherOut) == key {
		t.Fatal("two users got the same recovery key")
	}
	linkCLI(t, a, b)
	out, err = b.run(t.Context(), "whoami")
	if err != nil {
		t.Fatal(err)
	}
	devB := field(t, deviceLine, out)

	// A without the passphrase, with another user's key: refused.
	delete(a.vars, EnvPassphrase)
	a.vars[EnvRecoveryKey] = field(t, recoveryLine, otherOut)
	if _, err := a.run(t.Context(), "recover", devB); !errors.Is(err, client.ErrNotRecoveryKey) {
		t.Fatalf("recover with another user's key: %v", err)
	}
	a.vars[EnvRecoveryKey] = strings.ToUpper(strings.ReplaceAll(key, "-", " "))
	out, err = a.run(t.Context(), "recover", devB)
	if err != nil || !strings.Contains(out, "Revoked device "+devB+" with the recovery key (chain version 3)") {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	a.vars[EnvPassphrase] = "passphrase of A"
	for _, c := range []*cli{a, b} {
		out, err = c.run(t.Context(), "devices")
		if err != nil || !strings.Contains(out, "revoked "+devB) || !strings.Contains(out, "chain version 3") {
			t.Fatalf("devices after recover: %v\n%s", err, out)
		}
	}
}
