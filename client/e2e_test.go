package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
)

// e2eTimeout bounds each end-to-end step that waits on nodes (propagation
// through gossipsub and the DHT, long polls). Tests never assert timing;
// this only turns a hang into a failure.
const e2eTimeout = 2 * time.Minute

func newTestClient(t *testing.T, nodeURL string, hc *http.Client) *Client {
	t.Helper()
	c, err := New(Options{Home: filepath.Join(t.TempDir(), "home"), Node: nodeURL, HTTPClient: hc, KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitUser polls a client's lookup of user until ok accepts it.
func waitUser(t *testing.T, c *Client, user ident.UserID, what string, ok func(UserInfo) bool) UserInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	var got UserInfo
	tstest.WaitFor(t, e2eTimeout, func() error {
		info, err := c.Lookup(ctx, user)
		if err == nil && ok(info) {
			got = info
			return nil
		}
		return fmt.Errorf("%s: %s never came; last answer %+v, %v", c.API().URL(), what, info, err)
	})
	return got
}

func hasDevice(info UserInfo, id ident.DeviceID) bool {
	for _, d := range info.Devices {
		if d.ID.Equal(id) {
			return true
		}
	}
	return false
}

// link runs LinkShow on a and LinkJoin on b concurrently, the code passing
// from one to the other in its QR form.
func link(t *testing.T, a *Client, passA []byte, b *Client, passB []byte) (ident.DeviceID, Identity) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	codes := make(chan string, 1)
	var added ident.DeviceID
	var showErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		added, showErr = a.LinkShow(ctx, passA, func(code e2ee.LinkingCode) error {
			codes <- code.QR()
			return nil
		})
		close(codes)
	})
	var joined Identity
	var joinErr error
	if code, ok := <-codes; ok {
		joined, joinErr = b.LinkJoin(ctx, code, passB)
	}
	if joinErr != nil {
		cancel()
	}
	wg.Wait()
	if showErr != nil || joinErr != nil {
		t.Fatalf("link show: %v; link join: %v", showErr, joinErr)
	}
	if !added.Equal(joined.Device) {
		t.Fatalf("link show added %s, link join made %s", added, joined.Device)
	}
	return added, joined
}

// Register on node 0, link a second device through node 1, look the user up
// from node 2, revoke, and see the change from every node.
func TestRegisterLinkLookupRevokeAcrossNodes(t *testing.T) {
	nw := testnet.New(t, 3)
	a := newTestClient(t, nw.Nodes[0].APIURL(), nil)
	b := newTestClient(t, nw.Nodes[1].APIURL(), nil)
	c := newTestClient(t, nw.Nodes[2].APIURL(), nil)
	passA, passB := []byte("passphrase of A"), []byte("passphrase of B")

	idA, err := a.Register(t.Context(), "", nil, passA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(t.Context(), "", nil, passA); !errors.Is(err, ErrHomeInUse) {
		t.Fatalf("second register in the same home: %v, want ErrHomeInUse", err)
	}
	who, _, err := a.Whoami()
	if err != nil || !who.User.Equal(idA.User) || !who.Device.Equal(idA.Device) {
		t.Fatalf("whoami %+v %v, registered %+v", who, err, idA)
	}

	added, idB := link(t, a, passA, b, passB)
	if !idB.User.Equal(idA.User) {
		t.Fatalf("B joined user %s, A is %s", idB.User, idA.User)
	}

	info := waitUser(t, c, idA.User, "both devices on node 2", func(i UserInfo) bool {
		return len(i.Devices) == 2 && hasDevice(i, idA.Device) && hasDevice(i, added)
	})
	if info.Version != 2 {
		t.Fatalf("version %d, want 2", info.Version)
	}
	for _, d := range info.Devices {
		if d.Self || d.SigningKey == "" || d.MessagingKey == "" || d.Added.IsZero() {
			t.Fatalf("device summary %+v", d)
		}
	}
	devs, err := b.Devices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	selfCount := 0
	for _, d := range devs.Devices {
		if d.Self {
			selfCount++
			if !d.ID.Equal(idB.Device) {
				t.Fatalf("B's own device marked is %s, want %s", d.ID, idB.Device)
			}
		}
	}
	if selfCount != 1 || len(devs.Devices) != 2 {
		t.Fatalf("B's devices %+v", devs)
	}

	// A wrong passphrase changes nothing.
	if _, err := a.Revoke(t.Context(), idB.Device, []byte("not A's passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("revoke with a wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	// A device cannot revoke itself.
	if _, err := a.Revoke(t.Context(), idA.Device, passA); err == nil {
		t.Fatal("a device revoked itself")
	}
	v, err := a.Revoke(t.Context(), idB.Device, passA)
	if err != nil {
		t.Fatal(err)
	}
	if v != 3 {
		t.Fatalf("version after revoke %d, want 3", v)
	}
	for i, cl := range []*Client{a, b, c} {
		got := waitUser(t, cl, idA.User, fmt.Sprintf("the revocation on node %d", i), func(i UserInfo) bool { return i.Version == 3 })
		if len(got.Devices) != 1 || !got.Devices[0].ID.Equal(idA.Device) || len(got.Revoked) != 1 || !got.Revoked[0].Equal(idB.Device) {
			t.Fatalf("node %d after revoke: %+v", i, got)
		}
	}
	// The revoked device can no longer sign anything for the user.
	if _, err := b.Revoke(t.Context(), idA.Device, passB); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("revoke by a revoked device: %v, want ErrDeviceRevoked", err)
	}
	if _, err := b.LinkShow(t.Context(), passB, func(e2ee.LinkingCode) error { return errors.New("must not be shown") }); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("link show on a revoked device: %v, want ErrDeviceRevoked", err)
	}
}

// wrongCodeMessage seals msg with the key S of a code other than code, as
// role, and posts it to code's rendezvous mailbox.
func postWithWrongS(t *testing.T, api *API, code e2ee.LinkingCode, role e2ee.LinkingRole, msg []byte) {
	t.Helper()
	other, err := e2ee.NewLinkingCode(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := e2ee.NewLinkingSession(other, role)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := sess.Seal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.PostRendezvous(t.Context(), code.Rendezvous(), sealed); err != nil {
		t.Fatal(err)
	}
}

// Linking messages sealed with another S, posted to the rendezvous by
// someone who does not hold the code, are skipped on both sides: on a real
// node, linking with the genuine peer ends as without them.
func TestLinkingSkipsWrongS(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	a := newTestClient(t, url, nil)
	pass := []byte("pass")
	idA, err := a.Register(t.Context(), "", nil, pass)
	if err != nil {
		t.Fatal(err)
	}
	b := newTestClient(t, url, nil)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	joined := make(chan error, 1)
	var idB Identity
	_, err = a.LinkShow(ctx, pass, func(code e2ee.LinkingCode) error {
		// Posted before A's own chain head: B reads a forged head first,
		// A a forged request and a forged message of its own role.
		postWithWrongS(t, a.API(), code, e2ee.LinkingExistingDevice, []byte("forged head"))
		postWithWrongS(t, a.API(), code, e2ee.LinkingNewDevice, []byte("forged request"))
		go func() {
			var err error
			idB, err = b.LinkJoin(ctx, code.QR(), []byte("pass of B"))
			joined <- err
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("link show with forged messages in the rendezvous: %v", err)
	}
	if err := <-joined; err != nil {
		t.Fatalf("link join with forged messages in the rendezvous: %v", err)
	}
	if idB.User != idA.User {
		t.Fatalf("B joined user %s, want %s", idB.User, idA.User)
	}
}

// browser is what a person's browser does with the login page: follow
// every redirect (node → provider → node callback) keeping cookies; and
// what the person does: check that the page ends showing the client's
// confirmation code.
func browser(t *testing.T) func(LoginPage) error {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Jar: jar}
	return func(p LoginPage) error {
		resp, err := hc.Get(p.URL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("login page answered %d: %s", resp.StatusCode, body)
		}
		if want := `<strong id="confirmation-code">` + p.Code + `</strong>`; !strings.Contains(string(body), want) {
			return fmt.Errorf("the login page does not show the confirmation code %s: %s", p.Code, body)
		}
		return nil
	}
}

// Registration through a real OpenID Connect issuer (mockoidc): the node
// runs the authorization-code flow, the browser follows the redirects, the
// client gets its ticket by long poll and registers.
func TestRegisterWithProvider(t *testing.T) {
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	cfg := m.Config()
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, c *node.Config) {
		c.Registry.OpenRegistration = false
		c.Registry.OIDC = []keyregistry.OIDCProvider{{Name: "mock", Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret}}
	}))
	url := nw.Nodes[0].APIURL()

	c := newTestClient(t, url, nil)
	if _, err := c.Register(t.Context(), "", nil, []byte("p")); !errors.Is(err, ErrProviderRequired) {
		t.Fatalf("register without a provider on a closed node: %v, want ErrProviderRequired", err)
	}
	if _, err := c.Register(t.Context(), "nope", browser(t), []byte("p")); !errors.Is(err, ErrUnknownProvider) {
		t.Fatalf("register with an unknown provider: %v, want ErrUnknownProvider", err)
	}
	// A ticket for the login is bound to one account: the first
	// registration succeeds, the same account cannot register again.
	m.QueueUser(&mockoidc.MockUser{Subject: "alice-1", Email: "alice@example.org"})
	var opened string
	open := browser(t)
	id, err := c.Register(t.Context(), "mock", func(p LoginPage) error { opened = p.URL; return open(p) }, []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(opened, url+"/v1/auth/oidc/mock/start?login=") {
		t.Fatalf("opened %q", opened)
	}
	info, err := c.Devices(t.Context())
	if err != nil || info.Version != 1 || !info.Devices[0].ID.Equal(id.Device) {
		t.Fatalf("devices after OIDC registration: %+v %v", info, err)
	}

	c2 := newTestClient(t, url, nil)
	m.QueueUser(&mockoidc.MockUser{Subject: "alice-1", Email: "alice@example.org"})
	if _, err := c2.Register(t.Context(), "mock", browser(t), []byte("p")); !IsCode(err, CodeAlreadyRegistered) {
		t.Fatalf("second user for the same account: %v, want %s", err, CodeAlreadyRegistered)
	}
	if has, _ := c2.Home().HasDevice(); has {
		t.Fatal("a refused registration saved a device")
	}
}

// recordingTransport keeps every request the client sends.
type recordingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	sent [][]byte
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var rec bytes.Buffer
	rec.WriteString(req.Method + " " + req.URL.String() + "\n")
	for k, v := range req.Header {
		rec.WriteString(k + ": " + strings.Join(v, ",") + "\n")
	}
	if req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		rec.Write(body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	rt.mu.Lock()
	rt.sent = append(rt.sent, rec.Bytes())
	rt.mu.Unlock()
	return rt.base.RoundTrip(req)
}

// forms returns the encodings a secret could travel in.
func forms(secret []byte) map[string][]byte {
	return map[string][]byte{
		"raw":       secret,
		"base64":    []byte(base64.StdEncoding.EncodeToString(secret)),
		"base64url": []byte(base64.RawURLEncoding.EncodeToString(secret)),
		"hex":       []byte(hex.EncodeToString(secret)),
		"base32":    []byte(strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret))),
	}
}

// findIn reports which secrets (in any of their forms) occur in data.
func findIn(data []byte, secrets map[string][]byte) []string {
	var found []string
	for name, s := range secrets {
		for form, enc := range forms(s) {
			if bytes.Contains(data, enc) || bytes.Contains(bytes.ToLower(data), bytes.ToLower(enc)) && form != "raw" {
				found = append(found, name+" ("+form+")")
			}
		}
	}
	return found
}

func grepDir(t *testing.T, dir string, secrets map[string][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range findIn(data, secrets) {
			found = append(found, path+": "+f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// syncWriter is a log sink shared by nodes.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// Canary: after registering, linking and revoking through two nodes, no
// request the client sent, no file in the nodes' data directories and no
// line of their (debug) logs holds a device's private key seeds or a
// passphrase, in any usual encoding. The public keys are found in the
// data directories, which shows the search looks where the data is.
func TestCanaryNoSecretReachesANode(t *testing.T) {
	logs := &syncWriter{}
	nodes, dirs := canaryNodes(t, logs)

	rt := &recordingTransport{base: http.DefaultTransport}
	hc := &http.Client{Transport: rt}
	a := newTestClient(t, nodes[0].APIURL(), hc)
	b := newTestClient(t, nodes[1].APIURL(), hc)
	passA, passB := []byte("canary-passphrase-A-7f3c9e"), []byte("canary-passphrase-B-1d8a44")
	if _, err := a.Register(t.Context(), "", nil, passA); err != nil {
		t.Fatal(err)
	}
	_, idB := link(t, a, passA, b, passB)
	if _, err := a.Revoke(t.Context(), idB.Device, passA); err != nil {
		t.Fatal(err)
	}

	keysA, err := a.Home().Keys(passA)
	if err != nil {
		t.Fatal(err)
	}
	keysB, err := b.Home().Keys(passB)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"A signing seed": keysA.Signing.Seed(), "A messaging seed": keysA.Messaging.Seed(),
		"B signing seed": keysB.Signing.Seed(), "B messaging seed": keysB.Messaging.Seed(),
		"A passphrase": passA, "B passphrase": passB,
	}

	rt.mu.Lock()
	sent := rt.sent
	rt.mu.Unlock()
	if len(sent) < 10 {
		t.Fatalf("only %d requests recorded", len(sent))
	}
	for i, req := range sent {
		if found := findIn(req, secrets); len(found) > 0 {
			t.Errorf("request %d holds %v:\n%.300s", i, found, req)
		}
	}
	// Positive control: the genesis link, which the registration sends in
	// base64, is found by the same search.
	st, err := a.Home().State()
	if err != nil {
		t.Fatal(err)
	}
	if found := findIn(bytes.Join(sent, nil), map[string][]byte{"genesis": st.Chain[0]}); len(found) == 0 {
		t.Error("positive control: the genesis link is not found in the requests, so the search proves nothing")
	}

	for _, nd := range nodes {
		if err := nd.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if len(logs.Bytes()) == 0 {
		t.Fatal("no node logs captured")
	}
	if found := findIn(logs.Bytes(), secrets); len(found) > 0 {
		t.Errorf("node logs hold %v", found)
	}
	public := map[string][]byte{"A signing public key": keysA.Signing.Public().Bytes()}
	for _, dir := range dirs {
		if found := grepDir(t, dir, secrets); len(found) > 0 {
			t.Errorf("node data holds %v", found)
		}
		if found := grepDir(t, dir, public); len(found) == 0 {
			t.Errorf("positive control: %s does not hold A's public signing key, so the search proves nothing", dir)
		}
	}
}

// canaryNodes starts two nodes whose debug logs go to logs, for the canary
// tests that search the nodes' logs and data directories afterwards (the
// nodes stop when the test ends; Stop is idempotent, so tests may stop them
// earlier).
func canaryNodes(t *testing.T, logs io.Writer) ([]*node.Node, []string) {
	nw := testnet.New(t, 2, testnet.LogLevel(slog.LevelDebug), testnet.LogTo(logs))
	dirs := make([]string, len(nw.Nodes))
	for i, n := range nw.Nodes {
		dirs[i] = n.Config().DataDir
	}
	return nw.Nodes, dirs
}
