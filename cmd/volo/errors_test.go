package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// closedURL is the URL of a loopback port nothing listens on (it was
// bound and closed).
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// makeDevice puts in dir, as register would, the first device of a new
// user, saved with node and passphrase pass (which need not be one a new
// device may have). It returns the user's chain.
func makeDevice(t *testing.T, dir, node string, pass []byte) (user, device string, chain [][]byte) {
	t.Helper()
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h, err := client.OpenHome(dir, testKDF)
	if err != nil {
		t.Fatal(err)
	}
	st := client.State{User: g.UserID().String(), Device: keys.ID().String(), Node: node, Chain: [][]byte{g.Encode()}}
	if err := h.Create(keys, pass, st); err != nil {
		t.Fatal(err)
	}
	return st.User, st.Device, st.Chain
}

func assertNoDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists after the command: %v", dir, err)
	}
}

// Commands that use this device neither create a missing home nor touch
// a node: they say there is no device and how to make one.
func TestCommandsWithoutDeviceCreateNoHome(t *testing.T) {
	user, device, _ := makeDevice(t, filepath.Join(t.TempDir(), "other"), DefaultNode, []byte("passphrase"))
	home := filepath.Join(t.TempDir(), "home")
	c := newCLI(t, home, map[string]string{EnvPassphrase: "passphrase", EnvBackupPassword: "a backup password", EnvNode: closedURL(t)})
	for _, args := range [][]string{
		{"whoami"},
		{"devices"},
		{"revoke", device},
		{"link", "show"},
		{"send", user, "hello"},
		{"chat", user},
		{"inbox"},
		{"history", user},
		{"backup"},
		{"backup", "status"},
		{"restore"},
	} {
		_, err := c.run(t.Context(), args...)
		if !errors.Is(err, client.ErrNoHome) {
			t.Fatalf("volo %s without a device: %v, want client.ErrNoHome", strings.Join(args, " "), err)
		}
		want := fmt.Sprintf(`there is no device in %s: run "volo register" to make this device the first of a new user, or "volo link join CODE" to add it to your user`, home)
		if got := explain(err); !strings.HasPrefix(got, want) {
			t.Fatalf("volo %s without a device says %q, want it to start with %q", strings.Join(args, " "), got, want)
		}
		assertNoDir(t, home)
	}
}

// Every command that cannot reach its node says which URL it tried and
// how to pick another, whether the node came from $VOLO_NODE or from the
// home, over HTTP or WebSocket.
func TestUnreachableNode(t *testing.T) {
	url := closedURL(t)
	want := fmt.Sprintf("cannot reach the node at %s (connection refused): is it running? Pick another node with --node URL or $VOLO_NODE", url)
	root := t.TempDir()
	user, _, _ := makeDevice(t, filepath.Join(root, "device"), url, []byte("passphrase"))

	noHome := filepath.Join(root, "new")
	fresh := newCLI(t, noHome, map[string]string{EnvNode: url, EnvPassphrase: "passphrase"})
	saved := newCLI(t, filepath.Join(root, "device"), map[string]string{EnvPassphrase: "passphrase"})
	for _, tc := range []struct {
		c    *cli
		args []string
	}{
		{fresh, []string{"lookup", user}},
		{fresh, []string{"register"}},
		{saved, []string{"devices"}},
		{saved, []string{"send", user, "hello"}},
		{saved, []string{"inbox"}},
		{saved, []string{"backup", "status"}},
	} {
		_, err := tc.c.run(t.Context(), tc.args...)
		want := want
		if tc.args[0] == "send" {
			// The message is kept: the error says so.
			want = "not sent yet: " + want + `; the message is kept in this device's outbox and sent the next time "volo chat", "volo inbox" or "volo send" reaches the node (do not send it again)`
		}
		if !errors.Is(err, client.ErrNodeUnreachable) || explain(err) != want {
			t.Fatalf("volo %s: %v\nexplained as %q\nwant %q", strings.Join(tc.args, " "), err, explain(err), want)
		}
	}
	assertNoDir(t, noHome)

	// The node of a QR code is not chosen with --node: the advice is the
	// typed code with another address of that node.
	code, err := e2ee.NewLinkingCode(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	code.Node = url + "/"
	_, err = fresh.run(t.Context(), "link", "join", code.QR())
	wantLink := fmt.Sprintf("cannot reach the node at %s that the linking code names (connection refused): if this device reaches that node at another address, give the typed code with --node URL instead", url)
	if !errors.Is(err, client.ErrNodeUnreachable) || explain(err) != wantLink {
		t.Fatalf("link join, the code's node down: %v\nexplained as %q", err, explain(err))
	}
	assertNoDir(t, noHome)

	// The real main prints it so.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VOLO_TEST_RUN_MAIN=1", "VOLO_TEST_ARGS=--home "+noHome+" --node "+url+" lookup "+user)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || stderr.String() != "volo: "+want+"\n" {
		t.Fatalf("main: %v, stderr %q", err, stderr.String())
	}
}

// A new passphrase needs client.MinPassphraseLength characters, from
// every source, refused before any node is asked; a home made with a
// shorter one still opens.
func TestNewPassphraseMinimum(t *testing.T) {
	root := t.TempDir()
	url := closedURL(t)
	short := writeFile(t, root, "short", "7 chars\n")
	qr := func() string {
		code, err := e2ee.NewLinkingCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		code.Node = url
		return code.QR()
	}()
	home := filepath.Join(root, "new")
	for _, tc := range []struct {
		name string
		env  string
		args []string
	}{
		{"register, $VOLO_PASSPHRASE", "seven c", []string{"register"}},
		{"register, --passphrase-file", "", []string{"--passphrase-file", short, "register"}},
		{"link join", "ééééééé", []string{"link", "join", qr}},
	} {
		c := newCLI(t, home, map[string]string{EnvNode: url, EnvPassphrase: tc.env})
		_, err := c.run(t.Context(), tc.args...)
		if !errors.Is(err, client.ErrPassphraseTooShort) || !strings.Contains(explain(err), "a new passphrase must have at least 8 characters") {
			t.Fatalf("%s with a 7-character passphrase: %v, want client.ErrPassphraseTooShort", tc.name, err)
		}
		assertNoDir(t, home)
	}

	old := filepath.Join(root, "old")
	user, _, _ := makeDevice(t, old, url, []byte("p"))
	c := newCLI(t, old, map[string]string{EnvPassphrase: "p"})
	if out, err := c.run(t.Context(), "history", user); err != nil {
		t.Fatalf("history in a home with a 1-character passphrase: %v\n%s", err, out)
	}
}

// A typed code names no node: without --node or $VOLO_NODE, link join
// says so at once and makes no home.
func TestLinkJoinTypedCodeNeedsNode(t *testing.T) {
	code, err := e2ee.NewLinkingCode(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "home")
	c := newCLI(t, home, map[string]string{EnvPassphrase: "passphrase of B"})
	_, err = c.run(t.Context(), "link", "join", code.Text())
	if err == nil || !strings.Contains(explain(err), `give the node that "volo link show" printed with it, with --node URL or $VOLO_NODE`) {
		t.Fatalf("typed code without a node: %v", err)
	}
	assertNoDir(t, home)
}

// A code that linked a device already is refused as used, with what to
// do; the refused device's home is left as it was (missing, or empty).
func TestCLILinkCodeUsedTwice(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	url := nw.Nodes[0].APIURL()
	root := t.TempDir()
	a := newCLI(t, filepath.Join(root, "a"), map[string]string{EnvNode: url, EnvPassphrase: "passphrase of A"})
	b := newCLI(t, filepath.Join(root, "b"), map[string]string{EnvNode: url, EnvPassphrase: "passphrase of B"})
	if out, err := a.run(t.Context(), "register"); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	code := linkCLI(t, a, b)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()

	emptyHome := filepath.Join(root, "empty")
	if err := os.Mkdir(emptyHome, client.HomeDirMode); err != nil {
		t.Fatal(err)
	}
	for _, home := range []string{filepath.Join(root, "c"), emptyHome} {
		c := newCLI(t, home, map[string]string{EnvNode: url, EnvPassphrase: "passphrase of C"})
		_, err := c.run(ctx, "link", "join", code)
		const want = `this linking code was already used by another device: run "volo link show" again on your other device for a new code`
		if !errors.Is(err, client.ErrLinkingCodeUsed) || explain(err) != want {
			t.Fatalf("join with a used code: %v\nexplained as %q", err, explain(err))
		}
	}
	assertNoDir(t, filepath.Join(root, "c"))
	if entries, err := os.ReadDir(emptyHome); err != nil || len(entries) != 0 {
		t.Fatalf("the empty home after a refused join: %v %v", entries, err)
	}
}

// memNodeURL is the address of a memNode; nothing listens there.
const memNodeURL = "http://node.test"

// memNode answers, from memory, what "link show" and "link join" ask a
// node whose rendezvous no other device uses: users' chains, and mailboxes
// whose long polls end empty after the node's 25 seconds. Its HTTP client
// runs the handler in the calling goroutine, so in a synctest bubble the
// polls wait on the fake clock.
type memNode struct {
	mu     sync.Mutex
	chains map[string][][]byte
	boxes  map[string][][]byte
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err // as a real transport: the request was abandoned
	}
	return rec.Result(), nil
}

func (m *memNode) client() *http.Client {
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		links := m.chains[r.PathValue("id")]
		m.mu.Unlock()
		reply(w, http.StatusOK, wire.UserResponse{UserID: r.PathValue("id"), Version: uint64(len(links) - 1), Links: links})
	})
	mux.HandleFunc("POST /v1/rendezvous/{rid}", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		rid := r.PathValue("rid")
		m.boxes[rid] = append(m.boxes[rid], data)
		seq := uint64(len(m.boxes[rid]) - 1)
		m.mu.Unlock()
		reply(w, http.StatusCreated, wire.RendezvousPosted{Seq: seq})
	})
	mux.HandleFunc("GET /v1/rendezvous/{rid}", func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		if r.URL.Query().Get("after") == "" {
			after = -1
		}
		m.mu.Lock()
		box := m.boxes[r.PathValue("rid")]
		m.mu.Unlock()
		out := wire.RendezvousMessages{Messages: []wire.RendezvousMessage{}}
		for i := after + 1; i < int64(len(box)); i++ {
			out.Messages = append(out.Messages, wire.RendezvousMessage{Seq: uint64(i), Data: box[i]})
		}
		if len(out.Messages) == 0 {
			select {
			case <-time.After(keyregistry.LongPollTimeout):
			case <-r.Context().Done():
				return
			}
		}
		reply(w, http.StatusOK, out)
	})
	return &http.Client{Transport: handlerTransport{mux}}
}

// A typed code given with a node where no device shows it fails after the
// node's first long poll, saying so, naming the node and what to do.
func TestCLILinkJoinCodeForAnotherNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &memNode{chains: map[string][][]byte{}, boxes: map[string][][]byte{}}
		code, err := e2ee.NewLinkingCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		home := filepath.Join(t.TempDir(), "home")
		c := newCLI(t, home, map[string]string{EnvPassphrase: "passphrase of B"})
		c.env.httpClient = m.client()
		// The hour turns the old wait of client.LinkTimeout into a failure.
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		start := time.Now()
		_, err = c.run(ctx, "--node", memNodeURL, "link", "join", code.Text())
		want := fmt.Sprintf(`no device is showing this linking code at %s: give the node that "volo link show" printed with the code (--node URL); if it is that node, the code expired or the node restarted: run "volo link show" again on your other device for a new code`, memNodeURL)
		if !errors.Is(err, client.ErrNoRendezvous) || explain(err) != want {
			t.Fatalf("join at a node without the code: %v\nexplained as %q", err, explain(err))
		}
		if waited := time.Since(start); waited >= client.LinkTimeout {
			t.Fatalf("link join waited %s", waited)
		}
		assertNoDir(t, home)
	})
}

// "link show" that nobody joins ends after client.LinkTimeout saying the
// code expired and what to do.
func TestCLILinkShowExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &memNode{chains: map[string][][]byte{}, boxes: map[string][][]byte{}}
		home := filepath.Join(t.TempDir(), "home")
		user, _, chain := makeDevice(t, home, memNodeURL, []byte("passphrase of A"))
		m.chains[user] = chain
		c := newCLI(t, home, map[string]string{EnvPassphrase: "passphrase of A"})
		c.env.httpClient = m.client()
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		_, err := c.run(ctx, "link", "show")
		const want = `the linking code expired (a code lasts 10 minutes): run "volo link show" again for a new code`
		if !errors.Is(err, client.ErrLinkingExpired) || explain(err) != want {
			t.Fatalf("link show nobody joins: %v\nexplained as %q", err, explain(err))
		}
	})
}
