package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
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

// A chain the node serves that forks from the one verified before is shown
// by the user's name (ID) with both heads and what to do.
func TestExplainChainConflict(t *testing.T) {
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pinned := ident.ChainHead{User: g.UserID(), Version: 3, Link: g.ID()}
	offered := ident.ChainHead{User: g.UserID(), Version: 23, Link: g.ID()}
	err = fmt.Errorf("send: %w", &client.ChainConflictError{User: g.UserID(), Relation: ident.ChainForked, Pinned: pinned, Offered: offered})
	got := explain(err)
	for _, want := range []string{"forked chain of user " + g.UserID().String(), "version 3, head " + g.ID().String(),
		"version 23, head", "volo accept-chain " + g.UserID().String()} {
		if !strings.Contains(got, want) {
			t.Errorf("explain lacks %q:\n%s", want, got)
		}
	}
	if !errors.Is(err, client.ErrChainForked) || errors.Is(err, client.ErrChainRollback) {
		t.Error("errors.Is does not see the fork")
	}
}
