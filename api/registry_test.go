package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// call sends a JSON request (body nil: none) and decodes a 2xx answer into
// out; it returns the status and, for errors, the error code.
func call(t testing.TB, method, url string, body, out any) (int, string) {
	t.Helper()
	var r io.Reader
	if b, ok := body.([]byte); ok {
		r = bytes.NewReader(b)
	} else if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error wire.ErrorDetail `json:"error"`
		}
		if err := json.Unmarshal(data, &e); err != nil || e.Error.Code == "" {
			t.Fatalf("%s %s: %d with a body that is not a JSON error: %s", method, url, resp.StatusCode, data)
		}
		return resp.StatusCode, e.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, data)
		}
	}
	return resp.StatusCode, ""
}

func newKeys(t testing.TB) e2ee.DeviceKeys {
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// registration builds the body of POST /v1/users for keys with a fresh
// nonce from node url.
func registration(t testing.TB, url string, keys e2ee.DeviceKeys, ticket string) (api.RegisterRequest, ident.Link) {
	t.Helper()
	var n api.NonceResponse
	if st, code := call(t, "POST", url+"/v1/auth/nonce", nil, &n); st != 200 {
		t.Fatalf("nonce: %d %s", st, code)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := e2ee.SignRegistration(keys, n.Nonce)
	return api.RegisterRequest{Genesis: g.Encode(), Proof: p.Encode(), Ticket: ticket}, g
}

// chainAt reads user's chain from node url and verifies it.
func chainAt(t testing.TB, url string, user ident.UserID) (ident.DeviceSet, int, string) {
	t.Helper()
	var u api.UserResponse
	st, code := call(t, "GET", url+"/v1/users/"+user.String(), nil, &u)
	if st != 200 {
		return ident.DeviceSet{}, st, code
	}
	set, _, err := ident.DecodeChain(user, u.Links)
	if err != nil {
		t.Fatalf("chain from %s does not verify: %v", url, err)
	}
	if set.Version() != u.Version {
		t.Fatalf("version %d claimed, chain has %d", u.Version, set.Version())
	}
	return set, st, ""
}

// waitVersion polls every node until each serves user's chain at version
// want (gossip is asynchronous), failing after a generous deadline.
func waitVersion(t *testing.T, nw *testnet.Network, user ident.UserID, want uint64) []ident.DeviceSet {
	t.Helper()
	sets := make([]ident.DeviceSet, len(nw.Nodes))
	for i, n := range nw.Nodes {
		tstest.WaitFor(t, time.Minute, func() error {
			set, st, _ := chainAt(t, n.APIURL(), user)
			if st == 200 && set.Version() == want {
				sets[i] = set
				return nil
			}
			return fmt.Errorf("node %d: chain of %s not at version %d (status %d, version %d)", i, user, want, st, set.Version())
		})
	}
	return sets
}

// loginSecret is a client's random login secret; the browser's start
// address carries its wire.LoginID.
func loginSecret() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// pollTicket is the client's poll for the ticket of the login started with
// the login ID of secret.
func pollTicket(t testing.TB, url, secret string, out *wire.TicketResponse) (int, string) {
	t.Helper()
	return call(t, "POST", url+"/v1/auth/tickets", wire.TicketRequest{LoginSecret: secret}, out)
}

// browserLogin runs the browser side of the OIDC login at node url: start,
// the provider's authorize endpoint, the callback; it returns the final
// status and page.
func browserLogin(t testing.TB, url, provider, login string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.Get(url + "/v1/auth/oidc/" + provider + "/start?login=" + login)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(page)
}

func oidcNetwork(t *testing.T, n int, issuers ...*mockoidc.MockOIDC) *testnet.Network {
	t.Helper()
	return testnet.New(t, n, testnet.Configure(func(i int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = false
		for j, m := range issuers {
			c := m.Config()
			cfg.Registry.OIDC = append(cfg.Registry.OIDC, keyregistry.OIDCProvider{
				Name: fmt.Sprintf("mock%d", j), Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret,
				Scopes: []string{"email"},
			})
		}
	}))
}

func runMockOIDC(t *testing.T) *mockoidc.MockOIDC {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

// TestRegistryThreeNodes is the key registry end to end: OAuth login and
// registration on node 0, a second device through node 1, lookups from
// node 2, a revocation seen everywhere, and the rejections in between.
func TestRegistryThreeNodes(t *testing.T) {
	issuer := runMockOIDC(t)
	nw := oidcNetwork(t, 3, issuer)
	a, b, c := nw.Nodes[0].APIURL(), nw.Nodes[1].APIURL(), nw.Nodes[2].APIURL()

	var provs wire.ProvidersResponse
	call(t, "GET", a+"/v1/auth/providers", nil, &provs)
	if provs.OpenRegistration || len(provs.Providers) != 1 || provs.Providers[0].Issuer != issuer.Issuer() {
		t.Fatalf("providers = %+v", provs)
	}

	// The client waits for its ticket (long poll) while the browser logs in.
	issuer.QueueUser(&mockoidc.MockUser{Subject: "alice-sub", Email: "alice@example.org"})
	secret := loginSecret()
	login := wire.LoginID(secret)
	type ticketResult struct {
		status int
		t      wire.TicketResponse
	}
	polled := make(chan ticketResult, 1)
	go func() {
		for {
			var tr wire.TicketResponse
			st, _ := pollTicket(t, a, secret, &tr)
			if st != http.StatusAccepted {
				polled <- ticketResult{st, tr}
				return
			}
		}
	}()
	if st, page := browserLogin(t, a, "mock0", login); st != 200 || !strings.Contains(page, "Signed in") ||
		!strings.Contains(page, `<strong id="confirmation-code">`+wire.LoginCode(login)+`</strong>`) {
		t.Fatalf("browser login: %d %s", st, page)
	}
	res := <-polled
	if res.status != 200 || res.t.Ticket == "" {
		t.Fatalf("ticket poll: %+v", res)
	}
	// Handed out once: the next poll waits again.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	body, _ := json.Marshal(wire.TicketRequest{LoginSecret: secret})
	req, _ := http.NewRequestWithContext(ctx, "POST", a+"/v1/auth/tickets", bytes.NewReader(body))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("ticket handed out twice")
		}
	}
	cancel()

	phone := newKeys(t)
	reg, genesis := registration(t, a, phone, res.t.Ticket)
	user := genesis.UserID()

	t.Run("registration needs a ticket", func(t *testing.T) {
		noTicket, _ := registration(t, a, phone, "")
		if st, code := call(t, "POST", a+"/v1/users", noTicket, nil); st != 401 || code != "bad_ticket" {
			t.Fatalf("got %d %s, want 401 bad_ticket", st, code)
		}
		forged, _ := registration(t, a, phone, "not-a-ticket")
		if st, code := call(t, "POST", a+"/v1/users", forged, nil); st != 401 || code != "bad_ticket" {
			t.Fatalf("got %d %s, want 401 bad_ticket", st, code)
		}
		if _, st, code := chainAt(t, a, user); st != 404 || code != "user_not_found" {
			t.Fatalf("user exists after refused registrations: %d %s", st, code)
		}
	})

	var created wire.ChainVersion
	if st, code := call(t, "POST", a+"/v1/users", reg, &created); st != 201 {
		t.Fatalf("register: %d %s", st, code)
	}
	if created.UserID != user.String() || created.Version != 1 {
		t.Fatalf("register answered %+v, want %s version 1", created, user)
	}

	t.Run("replayed nonce", func(t *testing.T) {
		if st, code := call(t, "POST", a+"/v1/users", reg, nil); st != 401 || code != "bad_nonce" {
			t.Fatalf("replay: %d %s, want 401 bad_nonce", st, code)
		}
	})
	t.Run("one user per account", func(t *testing.T) {
		// The used ticket is gone; a new login with the same account gets
		// a ticket, but the account already has a user.
		issuer.QueueUser(&mockoidc.MockUser{Subject: "alice-sub"})
		l := loginSecret()
		if st, _ := browserLogin(t, a, "mock0", wire.LoginID(l)); st != 200 {
			t.Fatal("second login failed")
		}
		var tr wire.TicketResponse
		pollTicket(t, a, l, &tr)
		other := newKeys(t)
		r2, g2 := registration(t, a, other, tr.Ticket)
		if st, code := call(t, "POST", a+"/v1/users", r2, nil); st != 409 || code != "already_registered" {
			t.Fatalf("second user for one account: %d %s", st, code)
		}
		if _, st, _ := chainAt(t, a, g2.UserID()); st != 404 {
			t.Fatalf("refused user is served: %d", st)
		}
		// The old ticket is used up.
		r3, _ := registration(t, a, other, res.t.Ticket)
		if st, code := call(t, "POST", a+"/v1/users", r3, nil); st != 401 || code != "bad_ticket" {
			t.Fatalf("used ticket: %d %s", st, code)
		}
	})

	// Node 1 learns the chain (gossip or DHT) and adds the laptop.
	sets := waitVersion(t, nw, user, 1)
	laptop := newKeys(t)
	addReq, err := e2ee.NewAddDeviceRequest(sets[1].Head(), laptop)
	if err != nil {
		t.Fatal(err)
	}
	add, err := e2ee.NewAddDevice(sets[1], phone, addReq, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("link signed by a device not in the chain", func(t *testing.T) {
		mallory := newKeys(t)
		forged := add
		forged.Signer = mallory.ID()
		forged.Sig = nil
		forged.Sig = mallory.Signing.Sign(ident.DomainLink, forged.Encode())
		st, code := call(t, "POST", b+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: forged.Encode()}, nil)
		if st != 422 || code != "invalid_link" {
			t.Fatalf("forged link: %d %s, want 422 invalid_link", st, code)
		}
		if set, _, _ := chainAt(t, b, user); set.Version() != 1 {
			t.Fatalf("chain changed to version %d", set.Version())
		}
	})

	var v wire.ChainVersion
	if st, code := call(t, "POST", b+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: add.Encode()}, &v); st != 200 || v.Version != 2 {
		t.Fatalf("add device on node 1: %d %s %+v", st, code, v)
	}
	sets = waitVersion(t, nw, user, 2)
	if _, ok := sets[2].Lookup(laptop.ID()); !ok || sets[2].Len() != 2 {
		t.Fatalf("node 2 sees devices %v, want phone and laptop", sets[2].DeviceIDs())
	}

	t.Run("link for an old version is stale", func(t *testing.T) {
		// A revoke signed against version 1 (the set before the laptop).
		old, _, _ := ident.DecodeChain(user, [][]byte{genesis.Encode()})
		tablet := newKeys(t)
		r, _ := e2ee.NewAddDeviceRequest(old.Head(), tablet)
		stale, err := e2ee.NewAddDevice(old, phone, r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		st, code := call(t, "POST", c+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: stale.Encode()}, nil)
		if st != 409 || code != "stale_chain" {
			t.Fatalf("stale link: %d %s, want 409 stale_chain", st, code)
		}
		if set, _, _ := chainAt(t, c, user); set.Version() != 2 {
			t.Fatalf("chain changed to version %d", set.Version())
		}
	})

	// The laptop revokes the phone, through node 0.
	revoke, err := e2ee.NewRevokeDevice(sets[0], laptop, phone.ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st, code := call(t, "POST", a+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: revoke.Encode()}, &v); st != 200 || v.Version != 3 {
		t.Fatalf("revoke: %d %s %+v", st, code, v)
	}
	sets = waitVersion(t, nw, user, 3)
	for i, s := range sets {
		if !s.Revoked(phone.ID()) || s.Len() != 1 {
			t.Errorf("node %d: phone not revoked: %v", i, s.DeviceIDs())
		}
	}
	ctx, cancel = context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for i, n := range nw.Nodes {
		v, err := n.Host().DHT().GetValue(ctx, keyregistry.RecordKey(user))
		if err != nil {
			t.Fatalf("node %d: DHT get: %v", i, err)
		}
		if ch, err := keyregistry.DecodeRecord(v, user); err != nil || ch.Version() != 3 {
			t.Fatalf("node %d: DHT has version %d (%v), want 3", i, ch.Version(), err)
		}
	}

	t.Run("rolled-back record in the DHT does not replace the newer one", func(t *testing.T) {
		// The older chain with the user's real attestation: refused for
		// being older, not for lacking one.
		v, err := nw.Nodes[0].Host().DHT().GetValue(ctx, keyregistry.RecordKey(user))
		if err != nil {
			t.Fatal(err)
		}
		cur, err := keyregistry.DecodeRecord(v, user)
		if err != nil {
			t.Fatal(err)
		}
		old := keyregistry.Record{User: user, Links: [][]byte{genesis.Encode(), add.Encode()}, Attestation: cur.Record().Attestation}.Encode()
		if err := nw.Nodes[1].Host().DHT().PutValue(ctx, keyregistry.RecordKey(user), old); err == nil {
			t.Log("the DHT took the put of the older record; it must still select the newer one")
		}
		nw.RawPut(ctx, keyregistry.RecordKey(user), old)
		for i, n := range nw.Nodes {
			v, err := n.Host().DHT().GetValue(ctx, keyregistry.RecordKey(user))
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
			ch, _ := keyregistry.DecodeRecord(v, user)
			if ch.Version() != 3 {
				t.Errorf("node %d: DHT serves version %d after a rollback put, want 3", i, ch.Version())
			}
			if set, _, _ := chainAt(t, n.APIURL(), user); set.Version() != 3 {
				t.Errorf("node %d: API serves version %d, want 3", i, set.Version())
			}
		}
	})

	t.Run("forged records from a raw client are refused by every node", func(t *testing.T) {
		// A chain of another user stored under alice's key, alice's chain
		// with a tampered link, a record over the size limit, and garbage.
		eve := newKeys(t)
		eg, _ := e2ee.NewGenesis(eve, time.Now())
		mallory := newKeys(t)
		forgedAdd := add
		forgedAdd.Signer = mallory.ID()
		forgedAdd.Sig = nil
		forgedAdd.Sig = mallory.Signing.Sign(ident.DomainLink, forgedAdd.Encode())
		victim, _ := e2ee.NewGenesis(newKeys(t), time.Now())
		vid := victim.UserID()
		// Each with a valid attestation of the victim: refused for what
		// else is wrong.
		att := attestation(t, nodeKey(t), keyregistry.KindOIDC, vid)
		big := keyregistry.Record{User: vid, Links: [][]byte{victim.Encode(), make([]byte, keyregistry.MaxRecordSize)}, Attestation: att}.Encode()
		cases := map[string][]byte{
			"other user's chain":  keyregistry.Record{User: vid, Links: [][]byte{eg.Encode()}, Attestation: att}.Encode(),
			"forged link":         keyregistry.Record{User: vid, Links: [][]byte{victim.Encode(), forgedAdd.Encode()}, Attestation: att}.Encode(),
			"over the size limit": big,
		}
		for name, val := range cases {
			if _, err := keyregistry.DecodeRecord(val, vid); err == nil {
				t.Fatalf("%s: decodes", name)
			}
			nw.RawPut(ctx, keyregistry.RecordKey(vid), val)
			for i, n := range nw.Nodes {
				got, err := n.Host().DHT().GetValue(ctx, keyregistry.RecordKey(vid))
				if err == nil {
					t.Errorf("%s: node %d serves the forged record (%d bytes)", name, i, len(got))
				} else if !errors.Is(err, routing.ErrNotFound) {
					t.Errorf("%s: node %d: %v, want not found", name, i, err)
				}
				if _, st, code := chainAt(t, n.APIURL(), vid); st != 404 {
					t.Errorf("%s: node %d API: %d %s, want 404", name, i, st, code)
				}
			}
		}
		// Control: the raw client does reach the nodes with a valid record.
		nw.RawPut(ctx, keyregistry.RecordKey(vid), keyregistry.Record{User: vid, Links: [][]byte{victim.Encode()}, Attestation: att}.Encode())
		for i, n := range nw.Nodes {
			if _, err := n.Host().DHT().GetValue(ctx, keyregistry.RecordKey(vid)); err != nil {
				t.Errorf("control: node %d: %v", i, err)
			}
		}
	})

	t.Run("rejections are counted", func(t *testing.T) {
		resp, err := http.Get(a + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m, _ := io.ReadAll(resp.Body)
		for _, want := range []string{`volo_registry_rejections_total{reason="bad_nonce"} 1`, `volo_registry_registrations_total 1`} {
			if !strings.Contains(string(m), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestRendezvousHTTP(t *testing.T) {
	nw := testnet.New(t, 1)
	a := nw.Nodes[0].APIURL()
	code, err := e2ee.NewLinkingCode(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	box := a + "/v1/rendezvous/" + code.Rendezvous().String()

	// The new device waits before anything is posted; the old one posts.
	got := make(chan wire.RendezvousMessages, 1)
	go func() {
		var m wire.RendezvousMessages
		call(t, "GET", box, nil, &m)
		got <- m
	}()
	var seq map[string]uint64
	if st, c := call(t, "POST", box, []byte("sealed offer"), &seq); st != 201 || seq["seq"] != 0 {
		t.Fatalf("post: %d %s %v", st, c, seq)
	}
	if m := <-got; len(m.Messages) != 1 || string(m.Messages[0].Data) != "sealed offer" {
		t.Fatalf("long poll got %+v", m)
	}
	for i := 1; i < keyregistry.MaxMailboxMessages; i++ {
		if st, c := call(t, "POST", box, []byte{byte(i)}, &seq); st != 201 || seq["seq"] != uint64(i) {
			t.Fatalf("post %d: %d %s", i, st, c)
		}
	}
	if st, c := call(t, "POST", box, []byte("one more"), nil); st != 429 || c != "mailbox_full" {
		t.Fatalf("17th message: %d %s", st, c)
	}
	if st, c := call(t, "POST", a+"/v1/rendezvous/"+strings.Repeat("a", 52), make([]byte, keyregistry.MaxMailboxMessageSize+1), nil); st != 413 || c != "too_large" {
		t.Fatalf("large message: %d %s", st, c)
	}
	if st, c := call(t, "POST", a+"/v1/rendezvous/nope", []byte("x"), nil); st != 400 || c != "bad_rendezvous_id" {
		t.Fatalf("bad id: %d %s", st, c)
	}
	var m wire.RendezvousMessages
	call(t, "GET", box+"?after=14", nil, &m)
	if len(m.Messages) != 1 || m.Messages[0].Seq != 15 {
		t.Fatalf("after=14: %+v", m)
	}
	if st, c := call(t, "GET", box+"?after=-1", nil, nil); st != 400 || c != "bad_request" {
		t.Fatalf("after=-1: %d %s", st, c)
	}
	if st, c := call(t, "DELETE", box, nil, nil); st != 405 || c != "method_not_allowed" {
		t.Fatalf("DELETE: %d %s", st, c)
	}
}

func TestNonceLimitHTTP(t *testing.T) {
	nw := testnet.New(t, 1)
	a := nw.Nodes[0].APIURL()
	max := nw.Nodes[0].Config().Registry.MaxNoncesPerClient
	for i := range max {
		var n api.NonceResponse
		if st, c := call(t, "POST", a+"/v1/auth/nonce", nil, &n); st != 200 || len(n.Nonce) != keyregistry.NonceSize {
			t.Fatalf("nonce %d: %d %s", i, st, c)
		}
		if d := time.Until(n.ExpiresAt); d <= 0 || d > nw.Nodes[0].Config().Registry.NonceTTL.Std() {
			t.Fatalf("expires in %v", d)
		}
	}
	if st, c := call(t, "POST", a+"/v1/auth/nonce", nil, nil); st != 429 || c != "too_many_nonces" {
		t.Fatalf("one too many: %d %s", st, c)
	}
	if st, c := call(t, "GET", a+"/v1/users/not-a-user", nil, nil); st != 400 || c != "bad_user_id" {
		t.Fatalf("bad user ID: %d %s", st, c)
	}
	if st, c := call(t, "GET", a+"/v1/auth/oidc/nope/start?login="+wire.LoginID(loginSecret()), nil, nil); st != 404 || c != "unknown_provider" {
		t.Fatalf("unknown provider: %d %s", st, c)
	}
	if st, c := pollTicket(t, a, "short", nil); st != 400 || c != "bad_login_secret" {
		t.Fatalf("bad login secret: %d %s", st, c)
	}
	big := append([]byte(`{"ticket":"`), bytes.Repeat([]byte("a"), api.MaxRegistryBodySize)...)
	if st, c := call(t, "POST", a+"/v1/users", big, nil); st != 413 || c != "too_large" {
		t.Fatalf("large body: %d %s", st, c)
	}
}

// TestForgedGossipIsRefused: a raw gossipsub peer announces a forged chain
// and then a valid one; the nodes keep the valid one only, and the forged
// one is counted as refused by the topic validator.
func TestForgedGossipIsRefused(t *testing.T) {
	nw := testnet.New(t, 2)
	topic := rawGossip(t, nw)
	n0 := nw.Nodes[0]
	victim, _ := e2ee.NewGenesis(newKeys(t), time.Now())
	eve, _ := e2ee.NewGenesis(newKeys(t), time.Now())
	forged := keyregistry.Record{User: victim.UserID(), Links: [][]byte{eve.Encode()}, Attestation: attestation(t, nodeKey(t), keyregistry.KindOIDC, victim.UserID())}.Encode()
	if err := topic.Publish(t.Context(), forged); err != nil {
		t.Fatal(err)
	}
	good, _ := e2ee.NewGenesis(newKeys(t), time.Now())
	if err := topic.Publish(t.Context(), attestedRecord(t, nodeKey(t), keyregistry.KindDevelopment, good)); err != nil {
		t.Fatal(err)
	}
	// The valid announcement reaches both nodes.
	for i, n := range nw.Nodes {
		tstest.WaitFor(t, time.Minute, func() error {
			if _, st, _ := chainAt(t, n.APIURL(), good.UserID()); st != 200 {
				return fmt.Errorf("node %d never kept the valid announcement (status %d)", i, st)
			}
			return nil
		})
		if _, st, code := chainAt(t, n.APIURL(), victim.UserID()); st != 404 {
			t.Errorf("node %d serves the forged chain: %d %s", i, st, code)
		}
	}
	resp, err := http.Get(n0.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `volo_registry_rejections_total{reason="bad_gossip"} 1`) {
		t.Error("the forged announcement was not refused by node 0's validator")
	}
}
