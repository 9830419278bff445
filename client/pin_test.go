package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/wire"
)

// lyingEntry is an entry node that, once told to, serves another chain of
// one user than the network's (GET /v1/users/{user}); everything else
// passes through.
type lyingEntry struct {
	user ident.UserID
	mu   sync.Mutex
	lie  [][]byte // nil: tell the truth
}

func (e *lyingEntry) serve(links [][]byte) {
	e.mu.Lock()
	e.lie = links
	e.mu.Unlock()
}

func (e *lyingEntry) RoundTrip(req *http.Request) (*http.Response, error) {
	e.mu.Lock()
	lie := e.lie
	e.mu.Unlock()
	if lie == nil || req.Method != http.MethodGet || req.URL.Path != "/v1/users/"+e.user.String() {
		return http.DefaultTransport.RoundTrip(req)
	}
	body, _ := json.Marshal(wire.UserResponse{UserID: e.user.String(), Version: uint64(len(lie)), Links: lie, Proofs: make([]*wire.AnchorProof, len(lie))})
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
}

// sendFails sends text to peer and returns the error: the message must be
// stored for no device, and not be pending (sent again later) or sent.
func sendFails(t *testing.T, ch *Chat, peer ident.UserID, text string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	rep, err := ch.Send(ctx, peer, text)
	if err == nil || rep.Devices != 0 {
		t.Fatalf("send %q: stored for %d devices, %v", text, rep.Devices, err)
	}
	for _, m := range ch.History(peer) {
		if m.Text == text && m.State != StateFailed {
			t.Fatalf("the message is %v", m.State)
		}
	}
	return err
}

// TestSenderRefusesAnOldOrForkedChain is the attack on a sender: Bob's
// laptop is stolen and Bob revokes it; Alice's entry node then serves her
// Bob's chain from before the revocation, then a thief's fork. Alice's
// client refuses both, names Bob and both heads, and seals nothing (so
// nothing to the stolen laptop) until the node serves Bob's chain again or
// a chain that wins the fork rule, which she accepts with AcceptChain.
func TestSenderRefusesAnOldOrForkedChain(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	passA, passB, passL := []byte("alice pass"), []byte("bob pass"), []byte("laptop pass")
	bob := newTestClient(t, url, nil)
	idB, rk, err := bob.RegisterWithRecovery(t.Context(), "", nil, passB)
	if err != nil {
		t.Fatal(err)
	}
	laptop := newTestClient(t, url, nil)
	laptopID, _ := link(t, bob, passB, laptop, passL)
	entry := &lyingEntry{user: idB.User}
	alice := newTestClient(t, url, &http.Client{Transport: entry})
	if _, err := alice.Register(t.Context(), "", nil, passA); err != nil {
		t.Fatal(err)
	}
	chA, _, stopA := running(t, alice, passA)
	mustSend(t, chA, idB.User, "to phone and laptop", 2)
	stopA()
	before, _ := bob.home.State() // Bob's chain with the laptop: version 2
	stolen, err := laptop.home.Keys(passL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Revoke(t.Context(), laptopID, passB); err != nil {
		t.Fatal(err)
	}
	after, _ := bob.home.State()

	// Positive control: a new chat fetches the chain with the laptop revoked.
	chA, _, stopA = running(t, alice, passA)
	mustSend(t, chA, idB.User, "to the phone only", 1)
	stopA()

	// The entry node rolls back to version 2: refused, nothing sealed.
	entry.serve(before.Chain)
	chA, _, stopA = running(t, alice, passA)
	err = sendFails(t, chA, idB.User, "during the rollback")
	var conflict *ChainConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, ErrChainRollback) || conflict.Pinned.Version != 3 || conflict.Offered.Version != 2 {
		t.Fatalf("rollback: %v", err)
	}
	oldSet, _, _ := ident.DecodeChain(idB.User, before.Chain)
	newSet, _, _ := ident.DecodeChain(idB.User, after.Chain)
	for _, s := range []string{idB.User.String(), oldSet.Head().Link.String(), newSet.Head().Link.String()} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("the error does not name %s: %v", s, err)
		}
	}
	if _, err := chA.AcceptChain(t.Context(), idB.User); !errors.Is(err, ErrChainNotWinner) {
		t.Fatalf("accepting the rollback: %v", err)
	}
	chA.mu.Lock()
	outbox := len(chA.st.outbox)
	chA.mu.Unlock()
	if outbox != 0 {
		t.Fatalf("%d entries sealed during the rollback", outbox)
	}
	stopA()

	// A thief's fork from version 2: the laptop revokes the phone. Its
	// divergent link is made to lose the link-ID step against Bob's.
	thief := forkLink(t, oldSet, func(at time.Time) (ident.Link, error) {
		return e2ee.NewRevokeDevice(oldSet, stolen, idB.Device, at)
	}, func(l ident.Link) bool { return bytes.Compare(l.ID().Bytes(), newSet.Head().Link.Bytes()) > 0 })
	entry.serve(append(before.Chain[:2:2], thief.Encode()))
	chA, _, stopA = running(t, alice, passA)
	err = sendFails(t, chA, idB.User, "during the fork")
	if !errors.As(err, &conflict) || !errors.Is(err, ErrChainForked) || conflict.Offered.Link != thief.ID() || conflict.Pinned != newSet.Head() {
		t.Fatalf("fork: %v", err)
	}
	if _, err := chA.AcceptChain(t.Context(), idB.User); !errors.Is(err, ErrChainNotWinner) {
		t.Fatalf("accepting the thief's fork: %v", err)
	}
	stopA()

	// A branch where Bob's recovery key revoked the laptop wins the fork
	// rule: Alice accepts it explicitly, and sends again.
	recovered := forkLink(t, oldSet, func(at time.Time) (ident.Link, error) {
		return e2ee.NewRecoveryRevokeDevice(oldSet, rk, laptopID, at)
	}, func(ident.Link) bool { return true })
	entry.serve(append(before.Chain[:2:2], recovered.Encode()))
	chA, _, stopA = running(t, alice, passA)
	sendFails(t, chA, idB.User, "before accepting")
	head, err := chA.AcceptChain(t.Context(), idB.User)
	if err != nil || head.Link != recovered.ID() {
		t.Fatalf("accepting the recovered chain: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	if rep, err := chA.Send(ctx, idB.User, "after accepting"); err != nil || rep.Devices != 1 {
		t.Fatalf("send after accepting: %+v %v", rep, err)
	}
	stopA()
	// Reopened: the pin survives in the encrypted store.
	chA, _, stopA = running(t, alice, passA)
	defer stopA()
	chA.mu.Lock()
	p := chA.st.pins[idB.User]
	chA.mu.Unlock()
	if p.set.Head().Link != recovered.ID() {
		t.Fatalf("pinned after reopening: %+v", p.set.Head())
	}
}

// forkLink makes a link after set with make, trying later times until ok
// accepts it.
func forkLink(t *testing.T, set ident.DeviceSet, make func(time.Time) (ident.Link, error), ok func(ident.Link) bool) ident.Link {
	t.Helper()
	for at := set.LastTime().Add(time.Hour); ; at = at.Add(time.Millisecond) {
		l, err := make(at)
		if err != nil {
			t.Fatal(err)
		}
		if ok(l) {
			return l
		}
	}
}
