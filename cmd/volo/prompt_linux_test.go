package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/volo-chat/volo/internal/tstest"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: what the test writes to master
// is what a person types at the terminal slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// typeWhenSilent waits until the prompt text is on stderr and the terminal
// no longer echoes (the prompt is reading), then types line.
func typeWhenSilent(t *testing.T, master, slave *os.File, stderr *syncBuffer, prompt string, count int, line string) {
	t.Helper()
	tstest.WaitFor(t, e2eTimeout, func() error {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(stderr.String(), prompt) >= count && tio.Lflag&unix.ECHO == 0 {
			return nil
		}
		return fmt.Errorf("the prompt %q never turned echo off", prompt)
	})
	if _, err := master.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// The interactive prompt reads the passphrase from the terminal without
// echoing it, asks twice for a new one, and refuses two that differ.
func TestPassphrasePromptWithoutEcho(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second string
		wantErr       string
	}{
		{name: "confirmed", first: "typed secret", second: "typed secret"},
		{name: "mismatch", first: "typed secret", second: "typed secreT", wantErr: "do not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			c := newCLI(t, t.TempDir(), nil)
			c.env.stdin = slave
			stderr := c.env.stderr.(*syncBuffer)
			r := &runner{env: c.env, flags: &globalFlags{}}
			type result struct {
				p   []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				p, err := r.passphrase(true)
				done <- result{p, err}
			}()
			typeWhenSilent(t, master, slave, stderr, "Passphrase: ", 1, tc.first)
			typeWhenSilent(t, master, slave, stderr, "Repeat passphrase: ", 1, tc.second)
			res := <-done
			if tc.wantErr != "" {
				if res.err == nil || !strings.Contains(res.err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", res.err, tc.wantErr)
				}
			} else if res.err != nil || string(res.p) != tc.first {
				t.Fatalf("got %q, %v", res.p, res.err)
			}
			// Everything the terminal sent back to the screen: with the
			// slave closed, the master reads what is buffered, then EIO.
			// The line discipline echoed nothing that was typed.
			slave.Close()
			var screen []byte
			buf := make([]byte, 4096)
			for {
				n, err := master.Read(buf)
				screen = append(screen, buf[:n]...)
				if err != nil {
					break
				}
			}
			if strings.Contains(string(screen), "typed") {
				t.Fatalf("the terminal echoed the passphrase: %q", screen)
			}
			if strings.Contains(stderr.String(), "typed") {
				t.Fatal("the passphrase was written to stderr")
			}
		})
	}
}
