package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/e2ee"
)

// testKDF is the cheapest Argon2id e2ee accepts, so tests do not spend
// seconds per key file.
var testKDF = e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.MinBackupChunkSize}

// TestMain lets a test run the real main in a subprocess (for its exit code).
func TestMain(m *testing.M) {
	if os.Getenv("VOLO_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"volo"}, strings.Fields(os.Getenv("VOLO_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is an output that a test reads while a command writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// lines receives every complete line written, if not nil.
	lines   chan string
	partial string
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.lines != nil {
		s := b.partial + string(p)
		for {
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				break
			}
			select {
			case b.lines <- s[:i]:
			default:
			}
			s = s[i+1:]
		}
		b.partial = s
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// cli is one person's terminal: a home, environment variables and outputs.
type cli struct {
	t      *testing.T
	vars   map[string]string
	env    env
	stdout *syncBuffer
}

func newCLI(t *testing.T, home string, vars map[string]string) *cli {
	if vars == nil {
		vars = map[string]string{}
	}
	vars[EnvHome] = home
	c := &cli{t: t, vars: vars, stdout: &syncBuffer{lines: make(chan string, 256)}}
	c.env = env{
		stdin:  strings.NewReader(""),
		stdout: c.stdout,
		stderr: &syncBuffer{},
		getenv: func(k string) string { return vars[k] },
		kdf:    testKDF,
	}
	return c
}

// run runs one volo command line in-process and returns what it printed.
func (c *cli) run(ctx context.Context, args ...string) (string, error) {
	before := len(c.stdout.String())
	root := newRootCmd(c.env)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return c.stdout.String()[before:], err
}

func TestEveryCommandHasHelp(t *testing.T) {
	root := newRootCmd(newCLI(t, t.TempDir(), nil).env)
	var walk func(*cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		seen++
		if c.Short == "" {
			t.Errorf("%q has no short help", c.CommandPath())
		}
		if c.Long == "" && c.Name() != "version" {
			t.Errorf("%q has no long help", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	// volo, register, link, show, join, devices, revoke, recover, accept-chain, lookup, whoami, version,
	// send, chat, inbox, history, backup, status, restore.
	if seen != 20 {
		t.Errorf("%d commands, want 20", seen)
	}
	c := newCLI(t, t.TempDir(), nil)
	out, err := c.run(t.Context(), "link", "join", "--help")
	if err != nil || !strings.Contains(out, "volo link join CODE") || !strings.Contains(out, "--passphrase-file") {
		t.Fatalf("help of link join: %v\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	c := newCLI(t, t.TempDir(), nil)
	out, err := c.run(t.Context(), "version")
	if err != nil || !strings.HasPrefix(out, "volo "+client.Version+" (go") {
		t.Fatalf("version: %v %q", err, out)
	}
}

func TestWhoamiWithoutDevice(t *testing.T) {
	c := newCLI(t, filepath.Join(t.TempDir(), "home"), nil)
	_, err := c.run(t.Context(), "whoami")
	if !errors.Is(err, client.ErrNoHome) {
		t.Fatalf("whoami in an empty home: %v, want client.ErrNoHome", err)
	}
}

func TestPassphraseSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pass")
	if err := os.WriteFile(file, []byte("from file\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		file string
		env  string
		want string
		err  string
	}{
		{name: "file wins over env", file: file, env: "from env", want: "from file"},
		{name: "env", env: "from env", want: "from env"},
		{name: "empty file", file: empty, err: "empty passphrase"},
		{name: "missing file", file: filepath.Join(dir, "nope"), err: "no such file"},
		{name: "nothing and no terminal", err: "no passphrase: use --passphrase-file, set $VOLO_PASSPHRASE, or run in a terminal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t, dir, map[string]string{EnvPassphrase: tc.env})
			r := &runner{env: c.env, flags: &globalFlags{passphraseFile: tc.file}}
			got, err := r.passphrase(false)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestLinkJoinTypo(t *testing.T) {
	code, err := e2ee.NewLinkingCode(bytes.NewReader(bytes.Repeat([]byte{9}, e2ee.LinkingSecretSize)))
	if err != nil {
		t.Fatal(err)
	}
	text := []byte(code.Text())
	text[3] = map[bool]byte{true: 'b', false: 'a'}[text[3] == 'a']
	c := newCLI(t, filepath.Join(t.TempDir(), "home"), map[string]string{EnvPassphrase: "p", EnvNode: "http://127.0.0.1:1"})
	_, err = c.run(t.Context(), "link", "join", string(text))
	if !errors.Is(err, e2ee.ErrLinkingCodeChecksum) {
		t.Fatalf("mistyped code: %v, want the checksum error", err)
	}
}

func TestBadArguments(t *testing.T) {
	c := newCLI(t, filepath.Join(t.TempDir(), "home"), nil)
	for _, args := range [][]string{
		{"revoke", "not-a-device"},
		{"lookup", "not-a-user"},
		{"lookup"},
		{"link", "join"},
		{"--node", "ftp://x", "devices"},
		{"nonsense"},
		{"link", "nonsense"},
	} {
		if _, err := c.run(t.Context(), args...); err == nil {
			t.Errorf("volo %s: no error", strings.Join(args, " "))
		}
	}
}

// The real binary's main exits 1 and prints "volo: <error>" on error.
func TestExitCodeOnError(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VOLO_TEST_RUN_MAIN=1", "VOLO_TEST_ARGS=--home "+home+" whoami")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1", err)
	}
	if want := fmt.Sprintf("volo: there is no device in %s: run \"volo register\"", home); !strings.HasPrefix(stderr.String(), want) {
		t.Fatalf("stderr %q", stderr.String())
	}

	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VOLO_TEST_RUN_MAIN=1", "VOLO_TEST_ARGS=version")
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "volo ") {
		t.Fatalf("version: %v %q", err, out)
	}
}
