package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
)

// e2eTimeout turns a hang into a failure; tests never assert timing.
const e2eTimeout = 2 * time.Minute

var (
	userLine   = regexp.MustCompile(`(?m)^user\s+(b[a-z2-7]+)`)
	deviceLine = regexp.MustCompile(`(?m)^device\s+(b[a-z2-7]+)`)
)

func field(t *testing.T, re *regexp.Regexp, out string) string {
	t.Helper()
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in output:\n%s", re, out)
	}
	return m[1]
}

// waitOutput runs a command until its output passes ok (the nodes spread
// a change through gossipsub and the DHT).
func (c *cli) waitOutput(what string, ok func(string) bool, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), e2eTimeout)
	defer cancel()
	for {
		out, err := c.run(ctx, args...)
		if err == nil && ok(out) {
			return out
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("volo %s: %s never came; last: %v\n%s", strings.Join(args, " "), what, err, out)
		case <-time.After(client.PollInterval):
		}
	}
}

// Dev mode, with the CLI only: register in home A through node 0, "link
// show" in A and "link join" in home B through node 1 (the code read from
// A's output), then devices and lookup (from node 2) show both devices, and
// "revoke" removes one everywhere.
func TestCLIRegisterLinkRevoke(t *testing.T) {
	nw := testnet.New(t, 3, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	root := t.TempDir()
	homeA, homeB, homeC := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c")
	a := newCLI(t, homeA, map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of A"})
	b := newCLI(t, homeB, map[string]string{EnvNode: nw.Nodes[1].APIURL(), EnvPassphrase: "passphrase of B"})
	c := newCLI(t, homeC, map[string]string{EnvNode: nw.Nodes[2].APIURL()})

	out, err := a.run(t.Context(), "register")
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	user, devA := field(t, userLine, out), field(t, deviceLine, out)

	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	type result struct {
		out string
		err error
	}
	shown := make(chan result, 1)
	go func() {
		out, err := a.run(ctx, "link", "show")
		shown <- result{out, err}
	}()
	var code string
	for code == "" {
		select {
		case line := <-a.stdout.lines:
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "volo link join '"); ok {
				code = strings.TrimSuffix(rest, "'")
			}
		case r := <-shown:
			t.Fatalf("link show ended before showing a code: %v\n%s", r.err, r.out)
		}
	}
	joined, err := b.run(ctx, "link", "join", code)
	if err != nil {
		cancel()
		t.Fatalf("link join: %v\n%s", err, joined)
	}
	r := <-shown
	if r.err != nil {
		t.Fatalf("link show: %v\n%s", r.err, r.out)
	}
	devB := field(t, deviceLine, joined)
	if got := field(t, userLine, joined); got != user {
		t.Fatalf("B joined user %s, A registered %s", got, user)
	}
	if !strings.Contains(r.out, "Added device "+devB) || !strings.Contains(r.out, "▀") {
		t.Fatalf("link show output lacks the QR code or the new device:\n%s", r.out)
	}

	for _, cl := range []*cli{a, b} {
		out, err := cl.run(t.Context(), "devices")
		if err != nil || !strings.Contains(out, devA) || !strings.Contains(out, devB) || strings.Count(out, "(this device)") != 1 {
			t.Fatalf("devices: %v\n%s", err, out)
		}
	}
	c.waitOutput("both devices on node 2", func(out string) bool {
		return strings.Contains(out, devA) && strings.Contains(out, devB) && strings.Contains(out, "chain version 2, verified")
	}, "lookup", user)
	if out, err := b.run(t.Context(), "whoami"); err != nil || field(t, userLine, out) != user || field(t, deviceLine, out) != devB {
		t.Fatalf("whoami in B: %v\n%s", err, out)
	}

	// A wrong passphrase fails clearly and changes nothing.
	a.vars[EnvPassphrase] = "not the passphrase"
	if _, err := a.run(t.Context(), "revoke", devB); !errors.Is(err, client.ErrWrongPassphrase) || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("revoke with a wrong passphrase: %v", err)
	}
	a.vars[EnvPassphrase] = "passphrase of A"
	if out, err := a.run(t.Context(), "revoke", devB); err != nil || !strings.Contains(out, "Revoked device "+devB) {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	for _, cl := range []*cli{a, c} {
		out := cl.waitOutput("the revocation", func(out string) bool { return strings.Contains(out, "chain version 3, verified") }, "lookup", user)
		if !strings.Contains(out, "revoked "+devB) || strings.Count(out, devB) != 1 || !strings.Contains(out, devA) {
			t.Fatalf("lookup after revoke:\n%s", out)
		}
	}
	if _, err := b.run(t.Context(), "revoke", devA); !errors.Is(err, client.ErrDeviceRevoked) {
		t.Fatalf("revoke from the revoked device: %v, want client.ErrDeviceRevoked", err)
	}

	for _, h := range []string{homeA, homeB} {
		fi, err := os.Stat(h)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("home %s: %v %v", h, err, fi.Mode())
		}
		for _, f := range []string{client.KeysFile, client.StateFile} {
			fi, err := os.Stat(filepath.Join(h, f))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s/%s: %v %v", h, f, err, fi.Mode())
			}
		}
	}
	if _, err := os.Stat(filepath.Join(homeC, client.KeysFile)); !os.IsNotExist(err) {
		t.Fatalf("lookup created keys in an empty home: %v", err)
	}
}

// "volo register --provider" prints the login address and waits; a browser
// (an HTTP client with a cookie jar) that opens it and follows the
// redirects through a real OpenID Connect issuer completes the registration,
// ending on a page that shows the confirmation code the CLI printed.
func TestCLIRegisterWithProvider(t *testing.T) {
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	oc := m.Config()
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = false
		cfg.Registry.OIDC = []keyregistry.OIDCProvider{{Name: "mock", Issuer: oc.Issuer, ClientID: oc.ClientID, ClientSecret: oc.ClientSecret}}
	}))
	a := newCLI(t, filepath.Join(t.TempDir(), "a"), map[string]string{EnvNode: nw.Nodes[0].APIURL(), EnvPassphrase: "passphrase of A"})
	if _, err := a.run(t.Context(), "register"); !errors.Is(err, client.ErrProviderRequired) || !strings.Contains(err.Error(), "providers: mock") {
		t.Fatalf("register without a provider: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = a.run(ctx, "register", "--provider", "mock")
		done <- err
	}()
	var login, code string
	for login == "" || code == "" {
		select {
		case line := <-a.stdout.lines:
			s := strings.TrimSpace(line)
			if strings.HasPrefix(s, nw.Nodes[0].APIURL()+"/v1/auth/oidc/mock/start?login=") {
				login = s
			}
			if c, ok := strings.CutPrefix(s, "Confirmation code: "); ok {
				code = c
			}
		case err := <-done:
			t.Fatalf("register ended before printing the login address: %v", err)
		}
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Jar: jar}).Get(login)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login page: %s", resp.Status)
	}
	if !strings.Contains(string(page), `<strong id="confirmation-code">`+code+`</strong>`) {
		t.Fatalf("the login page does not show the CLI's confirmation code %s:\n%s", code, page)
	}
	if err := <-done; err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	user := field(t, userLine, out)
	if who, err := a.run(t.Context(), "whoami"); err != nil || field(t, userLine, who) != user {
		t.Fatalf("whoami: %v\n%s", err, who)
	}
}
