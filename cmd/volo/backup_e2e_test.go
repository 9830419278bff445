package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

// linkCLI runs "link show" in a and "link join" in b, the code read from
// a's output, and returns the code.
func linkCLI(t *testing.T, a, b *cli) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	shown := make(chan error, 1)
	go func() {
		_, err := a.run(ctx, "link", "show")
		shown <- err
	}()
	var code string
	for code == "" {
		select {
		case line := <-a.stdout.lines:
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "volo link join '"); ok {
				code = strings.TrimSuffix(rest, "'")
			}
		case err := <-shown:
			t.Fatalf("link show ended before showing a code: %v", err)
		}
	}
	if out, err := b.run(ctx, "link", "join", code); err != nil {
		cancel()
		t.Fatalf("link join: %v\n%s", err, out)
	}
	if err := <-shown; err != nil {
		t.Fatalf("link show: %v", err)
	}
	return code
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With the CLI only, on 3 nodes: A writes a note and backs up with a
// password file (a short one is refused); B, a device linked to A's user
// through another node, sees the backup in "backup status", fails to
// restore with a wrong password (nothing imported), restores with the
// right one and shows the note in its history; a second restore (the
// password from the environment) adds nothing. A user without a backup
// is told so.
func TestCLIBackupRestore(t *testing.T) {
	nw := testnet.New(t, 3, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
		cfg.Backup.Enabled = true
		cfg.Backup.Replicas, cfg.Backup.WriteQuorum = 3, 2
	}))
	root := t.TempDir()
	a := newCLI(t, filepath.Join(root, "a"), map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of A"})
	b := newCLI(t, filepath.Join(root, "b"), map[string]string{EnvNode: nw.Nodes[1].APIURL(), EnvPassphrase: "passphrase of B"})
	c := newCLI(t, filepath.Join(root, "c"), map[string]string{EnvNode: nw.Nodes[2].APIURL(), EnvPassphrase: "passphrase of C"})
	out, err := a.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	user := field(t, userLine, out)

	const note = "a note to myself, kept in the backup"
	if out, err := a.run(t.Context(), "send", user, note); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	linkCLI(t, a, b)

	pwFile := writeFile(t, root, "backup-password", "a backup password of mine\n")
	shortFile := writeFile(t, root, "short", "too short\n")
	if _, err := a.run(t.Context(), "backup", "--password-file", shortFile); !errors.Is(err, client.ErrBackupPasswordTooShort) {
		t.Fatalf("backup with a short password: %v", err)
	}
	out, err = a.run(t.Context(), "backup", "--password-file", pwFile)
	if err != nil || !strings.Contains(out, "Backed up 1 messages of 1 conversations.") || !strings.Contains(out, "manifest  b") {
		t.Fatalf("backup: %v\n%s", err, out)
	}

	// The write quorum is 2: the third copy may still be on its way.
	out = b.waitOutput("every chunk on 3 replicas", func(s string) bool {
		return strings.Contains(s, "replicas     at least 3 (every chunk checked)")
	}, "backup", "status")
	if !strings.Contains(out, "last backup") {
		t.Fatalf("backup status:\n%s", out)
	}

	wrongFile := writeFile(t, root, "wrong", "not the backup password\n")
	if _, err := b.run(t.Context(), "restore", "--password-file", wrongFile); !errors.Is(err, client.ErrBackupWrongPassword) ||
		!strings.Contains(err.Error(), "backup: wrong password or damaged backup (nothing imported)") {
		t.Fatalf("restore with a wrong password: %v", err)
	}
	if out, err := b.run(t.Context(), "history", user); err != nil || strings.Contains(out, note) {
		t.Fatalf("history after a failed restore: %v\n%s", err, out)
	}
	out, err = b.run(t.Context(), "restore", "--password-file", pwFile)
	if err != nil || !strings.Contains(out, "1 messages of 1 conversations, 1 new on this device") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := b.run(t.Context(), "history", user); err != nil || !strings.Contains(out, note) {
		t.Fatalf("history after the restore: %v\n%s", err, out)
	}
	b.vars[EnvBackupPassword] = "a backup password of mine"
	if out, err := b.run(t.Context(), "restore"); err != nil || !strings.Contains(out, "0 new on this device") {
		t.Fatalf("second restore: %v\n%s", err, out)
	}

	out, err = c.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register C: %v\n%s", err, out)
	}
	userC := field(t, userLine, out)
	if _, err := c.run(t.Context(), "backup", "status"); !errors.Is(err, client.ErrNoBackup) || !strings.Contains(err.Error(), "no backup found for user "+userC) {
		t.Fatalf("status without a backup: %v", err)
	}
	// No password anywhere and no terminal: a clear refusal.
	if _, err := c.run(t.Context(), "restore"); err == nil || !strings.Contains(err.Error(), "no backup password") {
		t.Fatalf("restore without a password: %v", err)
	}
}
