package api_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// nodeKey is a fresh libp2p peer key, as a node or a raw peer has.
func nodeKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// attestation is key's encoded attestation of user, of the given kind
// (an OIDC one hashes a made-up account).
func attestation(t testing.TB, key crypto.PrivKey, kind keyregistry.AttestationKind, user ident.UserID) []byte {
	t.Helper()
	var account []byte
	if kind == keyregistry.KindOIDC {
		account = keyregistry.AccountHash(user, keyregistry.Account{Issuer: "https://issuer.example", Subject: "raw"})
	}
	a, err := keyregistry.Attest(key, user, kind, account, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a.Encode()
}

// attestedRecord is the user record of links (genesis first) with key's
// attestation of the given kind.
func attestedRecord(t testing.TB, key crypto.PrivKey, kind keyregistry.AttestationKind, links ...ident.Link) []byte {
	t.Helper()
	user := links[0].UserID()
	rec := keyregistry.Record{User: user, Attestation: attestation(t, key, kind, user)}
	for _, l := range links {
		rec.Links = append(rec.Links, l.Encode())
	}
	return rec.Encode()
}

// rawGossip joins the registry topic from a bare libp2p host (no
// validators) connected to every node, and waits until every node is in
// the topic: what an attacker's peer can publish.
func rawGossip(t *testing.T, nw *testnet.Network) *pubsub.Topic {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	// Flood publishing sends to every peer in the topic at once rather
	// than to a mesh that forms only after a heartbeat.
	ps, err := pubsub.NewGossipSub(t.Context(), h, pubsub.WithFloodPublish(true))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(keyregistry.Topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nw.Nodes {
		if err := h.Connect(t.Context(), peer.AddrInfo{ID: n.PeerID(), Addrs: n.Host().Libp2p().Addrs()}); err != nil {
			t.Fatal(err)
		}
		tstest.WaitFor(t, time.Minute, func() error {
			if !slices.Contains(topic.ListPeers(), n.PeerID()) {
				return fmt.Errorf("node %s never joined the topic", n.PeerID())
			}
			return nil
		})
	}
	return topic
}

// wsAuth answers node url's WebSocket challenge as d and returns the
// node's answer.
func wsAuth(t *testing.T, url string, d wsDevice) wire.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, f := connect(t, ctx, url, d, d.keys.Signing)
	c.CloseNow()
	return f
}

// backupCheck asks node nd for d's backup quota, authenticated as d.
func backupCheck(t *testing.T, nd *node.Node, d wsDevice) (int, string) {
	t.Helper()
	st, code, _ := backupCall(t, "POST", nd.APIURL()+"/v1/backup/check", []byte(`{"bytes": 1000, "chunks": 2}`), nil,
		&d.keys, d.user, nd.PeerID().String(), wire.CheckWhat(1000, 2))
	return st, code
}

// rejections reads node nd's count of refused records for reason.
func rejections(t *testing.T, nd *node.Node, reason string) int {
	t.Helper()
	resp, err := http.Get(nd.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	prefix := `volo_registry_rejections_total{reason="` + reason + `"} `
	for line := range strings.Lines(string(m)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestUnattestedUserIsRefused: a valid chain put into the DHT and gossiped
// by a raw peer, without an attestation or with one forged in a node's
// name, is refused by every node: no lookup, no WebSocket, no backup. A
// user registered through a node works on every node.
func TestUnattestedUserIsRefused(t *testing.T) {
	nw := testnet.New(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Positive control: registered through node 0, known to all.
	alice := registerOpen(t, nw.Nodes[0].APIURL())
	waitVersion(t, nw, alice.user, 1)
	for i, nd := range nw.Nodes {
		if f := wsAuth(t, nd.APIURL(), alice); f.Type != wire.FrameReady {
			t.Errorf("node %d: registered user's WebSocket: %+v", i, f)
		}
		if st, code := backupCheck(t, nd, alice); st != 200 {
			t.Errorf("node %d: registered user's backup check: %d %s", i, st, code)
		}
	}

	newUser := func() (wsDevice, ident.Link) {
		k := newKeys(t)
		g, err := e2ee.NewGenesis(k, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return wsDevice{keys: k, user: g.UserID()}, g
	}
	unattested, ug := newUser()
	forged, fg := newUser()
	// An attestation naming node 0, signed by the attacker's key.
	a, err := keyregistry.Attest(nodeKey(t), fg.UserID(), keyregistry.KindOIDC,
		keyregistry.AccountHash(fg.UserID(), keyregistry.Account{Issuer: "https://issuer.example", Subject: "x"}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a.Node = nw.Nodes[0].PeerID()
	attacks := map[string]struct {
		d   wsDevice
		rec []byte
	}{
		"no attestation":     {unattested, keyregistry.Record{User: ug.UserID(), Links: [][]byte{ug.Encode()}}.Encode()},
		"forged attestation": {forged, keyregistry.Record{User: fg.UserID(), Links: [][]byte{fg.Encode()}, Attestation: a.Encode()}.Encode()},
	}
	topic := rawGossip(t, nw)
	for _, at := range attacks {
		nw.RawPut(ctx, keyregistry.RecordKey(at.d.user), at.rec)
		if err := topic.Publish(ctx, at.rec); err != nil {
			t.Fatal(err)
		}
	}
	// Control of the raw path: the same peer's record with a valid
	// attestation by its own key reaches every node, after the attacks.
	control, cg := newUser()
	good := attestedRecord(t, nodeKey(t), keyregistry.KindOIDC, cg)
	nw.RawPut(ctx, keyregistry.RecordKey(control.user), good)
	if err := topic.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	for i, nd := range nw.Nodes {
		tstest.WaitFor(t, time.Minute, func() error {
			if _, st, _ := chainAt(t, nd.APIURL(), control.user); st != 200 {
				return fmt.Errorf("node %d never kept the attested record (status %d)", i, st)
			}
			if n := rejections(t, nd, "bad_gossip"); n < len(attacks) {
				return fmt.Errorf("node %d refused %d gossiped records, want %d", i, n, len(attacks))
			}
			return nil
		})
		if f := wsAuth(t, nd.APIURL(), control); f.Type != wire.FrameReady {
			t.Errorf("node %d: attested raw user's WebSocket: %+v", i, f)
		}
	}
	for name, at := range attacks {
		for i, nd := range nw.Nodes {
			if _, err := nd.Host().DHT().GetValue(ctx, keyregistry.RecordKey(at.d.user)); !errors.Is(err, routing.ErrNotFound) {
				t.Errorf("%s: node %d DHT: %v, want not found", name, i, err)
			}
			if _, st, code := chainAt(t, nd.APIURL(), at.d.user); st != 404 {
				t.Errorf("%s: node %d API lookup: %d %s, want 404", name, i, st, code)
			}
			if f := wsAuth(t, nd.APIURL(), at.d); f.Type != wire.FrameError || f.Code != "unauthenticated" {
				t.Errorf("%s: node %d WebSocket: %+v, want unauthenticated", name, i, f)
			}
			if st, code := backupCheck(t, nd, at.d); st == 200 {
				t.Errorf("%s: node %d backup check: %d %s, want refused", name, i, st, code)
			}
		}
	}
}

// TestDevelopmentUsersRefusedByProductionNodes: a node that does not allow
// development users refuses the users a development node registered,
// while that node serves them.
func TestDevelopmentUsersRefusedByProductionNodes(t *testing.T) {
	nw := testnet.New(t, 2, testnet.Configure(func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Registry.OpenRegistration, cfg.Registry.AllowDevelopmentUsers = false, false
		}
	}))
	dev := registerOpen(t, nw.Nodes[0].APIURL())
	if f := wsAuth(t, nw.Nodes[0].APIURL(), dev); f.Type != wire.FrameReady {
		t.Fatalf("node 0 (development): %+v", f)
	}
	// Control: an OIDC-attested record reaches node 1 through the DHT.
	ctl, _ := e2ee.NewGenesis(newKeys(t), time.Now())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	nw.RawPut(ctx, keyregistry.RecordKey(ctl.UserID()), attestedRecord(t, nodeKey(t), keyregistry.KindOIDC, ctl))
	if _, st, code := chainAt(t, nw.Nodes[1].APIURL(), ctl.UserID()); st != 200 {
		t.Fatalf("node 1: OIDC-attested user: %d %s", st, code)
	}
	if _, st, code := chainAt(t, nw.Nodes[1].APIURL(), dev.user); st != 404 {
		t.Errorf("node 1: development user lookup: %d %s, want 404", st, code)
	}
	if f := wsAuth(t, nw.Nodes[1].APIURL(), dev); f.Type != wire.FrameError || f.Code != "unauthenticated" {
		t.Errorf("node 1: development user's WebSocket: %+v, want unauthenticated", f)
	}
	if st, _ := backupCheck(t, nw.Nodes[1], dev); st == 200 {
		t.Error("node 1: development user's backup check succeeds")
	}
}

// TestNewUserBudgetPerAttester: a node accepts at most its budget of new
// users attested by one node; more are neither stored nor served, while
// another node with a larger budget keeps them all.
func TestNewUserBudgetPerAttester(t *testing.T) {
	const budget = 2
	nw := testnet.New(t, 2, testnet.Configure(func(i int, cfg *node.Config) {
		if i == 1 {
			cfg.Registry.NewUsersPerAttester = budget
		}
	}))
	topic := rawGossip(t, nw)
	attester := nodeKey(t)
	var users []ident.UserID
	for range budget + 1 {
		g, err := e2ee.NewGenesis(newKeys(t), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, g.UserID())
		if err := topic.Publish(t.Context(), attestedRecord(t, attester, keyregistry.KindOIDC, g)); err != nil {
			t.Fatal(err)
		}
	}
	held := func(i int) int {
		n := 0
		for _, u := range users {
			if _, st, _ := chainAt(t, nw.Nodes[i].APIURL(), u); st == 200 {
				n++
			}
		}
		return n
	}
	tstest.WaitFor(t, time.Minute, func() error {
		if n := held(0); n != budget+1 {
			return fmt.Errorf("node 0 holds %d users, want %d", n, budget+1)
		}
		if n := rejections(t, nw.Nodes[1], "attest_budget"); n < 1 {
			return errors.New("node 1 has refused no user over the budget")
		}
		return nil
	})
	if n := held(1); n != budget {
		t.Errorf("node 1 holds %d users of one attester, want its budget %d", n, budget)
	}
}
