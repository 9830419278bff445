package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/wire"
)

// fakeNodeURL is the address of a fakeNode; nothing listens there.
const fakeNodeURL = "http://node.test"

// fakeNode serves, in memory, what linking uses of a node's API (chains,
// appending links, rendezvous mailboxes with the node's long polls) as
// docs/api.md describes it, without verifying anything. Its HTTP client
// runs the handler in the calling goroutine, so in a synctest bubble the
// long polls wait on the fake clock.
type fakeNode struct {
	mu      sync.Mutex
	chains  map[string][][]byte
	boxes   map[string][][]byte
	changed chan struct{}
	// refuseLinks answers every appended link with 409 invalid_link.
	refuseLinks bool
}

func newFakeNode() *fakeNode {
	return &fakeNode{chains: map[string][][]byte{}, boxes: map[string][][]byte{}, changed: make(chan struct{})}
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

func (f *fakeNode) client() *http.Client {
	return &http.Client{Transport: handlerTransport{f.handler()}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeNode) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		links, ok := f.chains[r.PathValue("id")]
		f.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, wire.ErrorResponse{Error: wire.ErrorDetail{Code: wire.CodeUserNotFound, Message: "no such user"}})
			return
		}
		writeJSON(w, http.StatusOK, wire.UserResponse{UserID: r.PathValue("id"), Version: uint64(len(links) - 1), Links: links})
	})
	mux.HandleFunc("POST /v1/users/{id}/links", func(w http.ResponseWriter, r *http.Request) {
		var req wire.AppendLinkRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, wire.ErrorResponse{Error: wire.ErrorDetail{Code: wire.CodeBadRequest, Message: err.Error()}})
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.refuseLinks {
			writeJSON(w, http.StatusConflict, wire.ErrorResponse{Error: wire.ErrorDetail{Code: wire.CodeInvalidLink, Message: "refused by the test"}})
			return
		}
		id := r.PathValue("id")
		f.chains[id] = append(f.chains[id], req.Link)
		writeJSON(w, http.StatusOK, wire.ChainVersion{UserID: id, Version: uint64(len(f.chains[id]) - 1)})
	})
	mux.HandleFunc("POST /v1/rendezvous/{rid}", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		writeJSON(w, http.StatusCreated, wire.RendezvousPosted{Seq: f.post(r.PathValue("rid"), data)})
	})
	mux.HandleFunc("GET /v1/rendezvous/{rid}", func(w http.ResponseWriter, r *http.Request) {
		after := int64(-1)
		if a := r.URL.Query().Get("after"); a != "" {
			after, _ = strconv.ParseInt(a, 10, 64)
		}
		timeout := time.After(keyregistry.LongPollTimeout)
		for {
			f.mu.Lock()
			box, changed := f.boxes[r.PathValue("rid")], f.changed
			f.mu.Unlock()
			out := wire.RendezvousMessages{Messages: []wire.RendezvousMessage{}}
			for i := after + 1; i < int64(len(box)); i++ {
				out.Messages = append(out.Messages, wire.RendezvousMessage{Seq: uint64(i), Data: box[i]})
			}
			if len(out.Messages) > 0 {
				writeJSON(w, http.StatusOK, out)
				return
			}
			select {
			case <-changed:
			case <-timeout:
				writeJSON(w, http.StatusOK, out)
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

func (f *fakeNode) post(rid string, data []byte) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boxes[rid] = append(f.boxes[rid], data)
	close(f.changed)
	f.changed = make(chan struct{})
	return uint64(len(f.boxes[rid]) - 1)
}

// fakeClient is a client of the fake node with the home dir.
func (f *fakeNode) newClient(t *testing.T, dir string) *Client {
	t.Helper()
	c, err := New(Options{Home: dir, Node: fakeNodeURL, HTTPClient: f.client(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// registered is a client whose home holds the first device of a user the
// fake node knows.
func (f *fakeNode) registered(t *testing.T, pass []byte) (*Client, ident.DeviceSet) {
	t.Helper()
	keys, st := testDevice(t)
	st.Node = fakeNodeURL
	c := f.newClient(t, filepath.Join(t.TempDir(), "a"))
	if err := c.Home().Create(keys, pass, st); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.chains[st.User] = st.Chain
	f.mu.Unlock()
	set, _, err := savedChain(st)
	if err != nil {
		t.Fatal(err)
	}
	return c, set
}

// showing runs LinkShow on c until ctx ends and returns the code it shows
// and where its result will come.
func showing(t *testing.T, ctx context.Context, c *Client, pass []byte) (e2ee.LinkingCode, <-chan error) {
	t.Helper()
	codes := make(chan e2ee.LinkingCode, 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.LinkShow(ctx, pass, func(code e2ee.LinkingCode) error {
			codes <- code
			return nil
		})
		done <- err
	}()
	select {
	case code := <-codes:
		return code, done
	case err := <-done:
		t.Fatalf("link show ended before showing a code: %v", err)
	}
	panic("unreachable")
}

func assertNoHome(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("home %s left behind: %v", dir, err)
	}
}

// A code used once already is refused as used, before the new device
// posts anything, and the refused device's home is not created.
func TestLinkJoinCodeUsedTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNode()
		pass := []byte("passphrase of A")
		a, _ := f.registered(t, pass)
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		code, shown := showing(t, ctx, a, pass)
		b := f.newClient(t, filepath.Join(t.TempDir(), "b"))
		if _, err := b.LinkJoin(ctx, code.QR(), []byte("passphrase of B")); err != nil {
			t.Fatalf("first join: %v", err)
		}
		if err := <-shown; err != nil {
			t.Fatalf("link show: %v", err)
		}
		posted := len(f.boxes[code.Rendezvous().String()])

		dirC := filepath.Join(t.TempDir(), "c")
		c := f.newClient(t, dirC)
		_, err := c.LinkJoin(ctx, code.QR(), []byte("passphrase of C"))
		if !errors.Is(err, ErrLinkingCodeUsed) {
			t.Fatalf("second join with the code: %v, want ErrLinkingCodeUsed", err)
		}
		assertNoHome(t, dirC)
		if n := len(f.boxes[code.Rendezvous().String()]); n != posted {
			t.Fatalf("the refused join posted %d messages", n-posted)
		}
	})
}

// Anyone can post to a rendezvous: junk there (bytes, another code's
// message, a message claiming the new device's role with the right key
// check but not sealed with S) is skipped by both devices, and linking
// ends as without it.
func TestLinkingSurvivesInjectedMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNode()
		pass := []byte("passphrase of A")
		a, _ := f.registered(t, pass)
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		code, shown := showing(t, ctx, a, pass)
		synctest.Wait()
		rid := code.Rendezvous().String()
		f.mu.Lock()
		n := len(f.boxes[rid])
		f.mu.Unlock()
		if n != 1 {
			t.Fatalf("the rendezvous holds %d messages, want the chain head", n)
		}
		forged, err := e2ee.NewLinkingSession(code, e2ee.LinkingNewDevice)
		if err != nil {
			t.Fatal(err)
		}
		claim, err := forged.Seal([]byte("not an add-device request"))
		if err != nil {
			t.Fatal(err)
		}
		claim[len(claim)-1] ^= 1 // right key check, not sealed with S
		other, err := e2ee.NewLinkingCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		stranger, err := e2ee.NewLinkingSession(other, e2ee.LinkingNewDevice)
		if err != nil {
			t.Fatal(err)
		}
		foreign, err := stranger.Seal([]byte("for another code"))
		if err != nil {
			t.Fatal(err)
		}
		for _, junk := range [][]byte{[]byte("junk"), foreign, claim} {
			f.post(rid, junk)
		}
		b := f.newClient(t, filepath.Join(t.TempDir(), "b"))
		id, err := b.LinkJoin(ctx, code.QR(), []byte("passphrase of B"))
		if err != nil {
			t.Fatalf("join with junk in the rendezvous: %v", err)
		}
		if err := <-shown; err != nil {
			t.Fatalf("link show with junk in the rendezvous: %v", err)
		}
		f.mu.Lock()
		links := f.chains[id.User.String()]
		f.mu.Unlock()
		set, _, err := ident.DecodeChain(id.User, links)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(set.DeviceIDs(), id.Device.Equal) {
			t.Fatal("the new device is not in the user's chain at the node")
		}
	})
}

// A code no device shows at the node (typed for another node, expired,
// or from before a restart) fails after one long poll, not after
// LinkTimeout, and leaves no home.
func TestLinkJoinNoRendezvous(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNode()
		code, err := e2ee.NewLinkingCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "b")
		b := f.newClient(t, dir)
		// The hour turns the old endless wait into a failure.
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		start := time.Now()
		_, err = b.LinkJoin(ctx, code.Text(), []byte("passphrase of B"))
		if !errors.Is(err, ErrNoRendezvous) {
			t.Fatalf("join of a code nobody shows: %v, want ErrNoRendezvous", err)
		}
		if waited := time.Since(start); waited >= LinkTimeout {
			t.Fatalf("the join waited %s for a rendezvous that does not exist", waited)
		}
		assertNoHome(t, dir)
	})
}

// Both sides give up after LinkTimeout with ErrLinkingExpired (not a bare
// context deadline): link show when nobody joins, link join when the
// existing device never answers its request.
func TestLinkingExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNode()
		pass := []byte("passphrase of A")
		a, set := f.registered(t, pass)
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		_, shown := showing(t, ctx, a, pass)
		if err := <-shown; !errors.Is(err, ErrLinkingExpired) {
			t.Fatalf("link show nobody joins: %v, want ErrLinkingExpired", err)
		}

		code, err := e2ee.NewLinkingCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := e2ee.NewLinkingSession(code, e2ee.LinkingExistingDevice)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := sess.Seal(set.Head().Encode())
		if err != nil {
			t.Fatal(err)
		}
		f.post(code.Rendezvous().String(), sealed)
		dir := filepath.Join(t.TempDir(), "b")
		b := f.newClient(t, dir)
		if _, err := b.LinkJoin(ctx, code.Text(), []byte("passphrase of B")); !errors.Is(err, ErrLinkingExpired) {
			t.Fatalf("link join nobody answers: %v, want ErrLinkingExpired", err)
		}
		assertNoHome(t, dir)
	})
}

// When the node refuses the add-device link, the new device's home holds
// nothing: a home that did not exist is not created, an empty one stays
// empty.
func TestLinkJoinRefusedLeavesNoHome(t *testing.T) {
	for _, existed := range []bool{false, true} {
		t.Run("home existed="+strconv.FormatBool(existed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeNode()
				f.refuseLinks = true
				pass := []byte("passphrase of A")
				a, _ := f.registered(t, pass)
				ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
				defer cancel()
				code, shown := showing(t, ctx, a, pass)
				dir := filepath.Join(t.TempDir(), "b")
				if existed {
					if err := os.Mkdir(dir, HomeDirMode); err != nil {
						t.Fatal(err)
					}
				}
				b := f.newClient(t, dir)
				if _, err := b.LinkJoin(ctx, code.QR(), []byte("passphrase of B")); !IsCode(err, wire.CodeInvalidLink) {
					t.Fatalf("join the node refuses: %v, want invalid_link", err)
				}
				if existed {
					if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
						t.Fatalf("the empty home after a refused join: %v %v", entries, err)
					}
				} else {
					assertNoHome(t, dir)
				}
				cancel()
				<-shown
			})
		})
	}
}
