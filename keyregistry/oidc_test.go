package keyregistry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/volo-chat/volo/wire"
)

// tokenSwap is an HTTP transport that passes everything to the real
// issuer but, when set, replaces the id_token of token responses: the node
// then sees what a compromised network path or a rogue issuer would give it.
type tokenSwap struct {
	mu   sync.Mutex
	swap func(orig string) string
}

func (s *tokenSwap) set(f func(string) string) { s.mu.Lock(); s.swap = f; s.mu.Unlock() }

func (s *tokenSwap) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	s.mu.Lock()
	swap := s.swap
	s.mu.Unlock()
	if err != nil || swap == nil || !strings.HasSuffix(r.URL.Path, mockoidc.TokenEndpoint) {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err == nil {
		if orig, ok := m["id_token"].(string); ok {
			m["id_token"] = swap(orig)
			body, _ = json.Marshal(m)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func runIssuer(t *testing.T, key *rsa.PrivateKey) *mockoidc.MockOIDC {
	t.Helper()
	m, err := mockoidc.NewServer(key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func providerCfg(name string, m *mockoidc.MockOIDC) OIDCProvider {
	c := m.Config()
	return OIDCProvider{Name: name, Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret}
}

// authorize follows the authorization URL at the issuer as a browser would
// and returns the code, state and nonce it carries back to the callback.
func authorize(t *testing.T, s *Service, authURL string) (code, state, nonce string) {
	t.Helper()
	au, _ := url.Parse(authURL)
	if au.Query().Get("code_challenge_method") != "S256" || au.Query().Get("code_challenge") == "" {
		t.Fatalf("no PKCE S256 challenge in %s", authURL)
	}
	nonce = au.Query().Get("nonce")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %v", resp.StatusCode, err)
	}
	if !strings.HasPrefix(loc.String(), s.CallbackURL("mock")) {
		t.Fatalf("redirected to %s, want the callback", loc)
	}
	return loc.Query().Get("code"), loc.Query().Get("state"), nonce
}

// pending reports whether the holder of secret, polling, finds no ticket.
func pending(t *testing.T, s *Service, secret string) bool {
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // a poll with an ended context answers what is there now
	_, _, ok, err := s.PollTicket(ctx, secret)
	return err == nil && !ok
}

func TestOIDCLogin(t *testing.T) {
	good := runIssuer(t, nil)
	rogueKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rogue := runIssuer(t, rogueKey)
	swap := &tokenSwap{}
	cfg := DefaultConfig()
	cfg.OpenRegistration = false
	cfg.OIDC = []OIDCProvider{providerCfg("mock", good)}
	s, _ := newTestService(t, cfg, WithHTTPClient(&http.Client{Transport: swap}))

	login := func(t *testing.T, secret string) (code, state, nonce string) {
		u, err := s.StartLogin(t.Context(), "mock", wire.LoginID(secret))
		if err != nil {
			t.Fatal(err)
		}
		return authorize(t, s, u)
	}
	claims := func(iss, aud, nonce string, exp time.Time) jwt.Claims {
		now := time.Now()
		return &mockoidc.IDTokenClaims{Nonce: nonce, RegisteredClaims: &jwt.RegisteredClaims{
			Issuer: iss, Subject: "mallory", Audience: jwt.ClaimStrings{aud},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
		}}
	}
	sign := func(kp *mockoidc.Keypair, c jwt.Claims) string {
		tok, err := kp.SignJWT(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t.Run("good login", func(t *testing.T) {
		good.QueueUser(&mockoidc.MockUser{Subject: "alice"})
		id := "good-login-aaaaaaaaaaaaaaa"
		code, state, _ := login(t, id)
		if confirm, err := s.FinishLogin(t.Context(), "mock", code, state); err != nil || confirm != wire.LoginCode(wire.LoginID(id)) {
			t.Fatalf("finish: code %q, %v", confirm, err)
		}
		tk, _, ok, err := s.PollTicket(t.Context(), id)
		if err != nil || !ok {
			t.Fatalf("poll: %v %v", ok, err)
		}
		a, err := s.logins.peekTicket(tk)
		if err != nil || a.Subject != "alice" || a.Issuer != good.Issuer() {
			t.Fatalf("ticket bound to %+v, %v", a, err)
		}
		// The state is single use.
		if _, err := s.FinishLogin(t.Context(), "mock", code, state); !errors.Is(err, ErrBadState) {
			t.Fatalf("replayed callback: %v", err)
		}
	})

	bad := []struct {
		name string
		swap func(nonce string) func(string) string
	}{
		{"token from an unknown issuer", func(nonce string) func(string) string {
			return func(string) string {
				return sign(rogue.Keypair, claims(rogue.Issuer(), rogue.ClientID, nonce, time.Now().Add(time.Hour)))
			}
		}},
		{"good issuer's claims signed by another key", func(nonce string) func(string) string {
			return func(string) string {
				return sign(rogue.Keypair, claims(good.Issuer(), good.ClientID, nonce, time.Now().Add(time.Hour)))
			}
		}},
		{"tampered signature", func(string) func(string) string {
			return func(orig string) string {
				parts := strings.Split(orig, ".")
				sig := []byte(parts[2])
				sig[10] ^= 0x01
				if sig[10] == '-' || sig[10] == '_' { // keep it base64url
					sig[10] = 'A'
				}
				return parts[0] + "." + parts[1] + "." + string(sig)
			}
		}},
		{"tampered claims", func(string) func(string) string {
			return func(orig string) string {
				parts := strings.Split(orig, ".")
				return parts[0] + "." + parts[1][:len(parts[1])-2] + "AA." + parts[2]
			}
		}},
		{"wrong nonce", func(string) func(string) string {
			return func(string) string {
				return sign(good.Keypair, claims(good.Issuer(), good.ClientID, "another-nonce", time.Now().Add(time.Hour)))
			}
		}},
		{"wrong audience", func(nonce string) func(string) string {
			return func(string) string {
				return sign(good.Keypair, claims(good.Issuer(), "another-client", nonce, time.Now().Add(time.Hour)))
			}
		}},
		{"expired", func(nonce string) func(string) string {
			return func(string) string {
				return sign(good.Keypair, claims(good.Issuer(), good.ClientID, nonce, time.Now().Add(-time.Hour)))
			}
		}},
		{"no token", func(string) func(string) string { return func(string) string { return "" } }},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			id := "bad-login-" + strings.Repeat(string(rune('a'+i)), 16)
			code, state, nonce := login(t, id)
			swap.set(c.swap(nonce))
			defer swap.set(nil)
			_, err := s.FinishLogin(t.Context(), "mock", code, state)
			if !errors.Is(err, ErrBadIDToken) {
				t.Fatalf("err = %v, want ErrBadIDToken", err)
			}
			if !pending(t, s, id) {
				t.Fatal("a ticket was made")
			}
		})
	}

	t.Run("control: the swap path passes a good token through", func(t *testing.T) {
		id := "control-login-aaaaaaaaaaa"
		code, state, nonce := login(t, id)
		swap.set(func(string) string {
			return sign(good.Keypair, claims(good.Issuer(), good.ClientID, nonce, time.Now().Add(time.Hour)))
		})
		defer swap.set(nil)
		if _, err := s.FinishLogin(t.Context(), "mock", code, state); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		if _, err := s.StartLogin(t.Context(), "nope", "good-login-aaaaaaaaaaaaaaa"); !errors.Is(err, ErrUnknownProvider) {
			t.Errorf("unknown provider: %v", err)
		}
		for _, id := range []string{"", "short", strings.Repeat("a", 65), "has space aaaaaaaaaaaaaaaaaa", "has/slashaaaaaaaaaaaaaaaaaa"} {
			if _, err := s.StartLogin(t.Context(), "mock", id); !errors.Is(err, ErrBadLoginID) {
				t.Errorf("login ID %q: %v", id, err)
			}
		}
		if _, err := s.FinishLogin(t.Context(), "mock", "code", "made-up-state"); !errors.Is(err, ErrBadState) {
			t.Errorf("made-up state: %v", err)
		}
	})
}

func TestProviderDownDoesNotStopTheNode(t *testing.T) {
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := DefaultConfig()
	cfg.OIDC = []OIDCProvider{{Name: "down", Issuer: "http://" + addr + "/oidc", ClientID: "c"}}
	s, _ := newTestService(t, cfg)
	if _, err := s.StartLogin(t.Context(), "down", "some-login-aaaaaaaaaaaaaaa"); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("err = %v, want ErrProviderUnavailable", err)
	}
	// The provider comes up on that address: the next start discovers it.
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err = listenOn(addr)
	if err != nil {
		t.Skipf("address %s taken again: %v", addr, err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	if _, err := s.StartLogin(t.Context(), "down", "some-login-aaaaaaaaaaaaaaa"); err != nil {
		t.Fatalf("after the provider came up: %v", err)
	}
}

// An OIDC login is bound to the client that started it. The client's login
// ID is in the address its browser opens, so anyone who sees that address
// knows it; still, polling takes the login secret, so that person cannot
// collect the victim's ticket, and a second login started with the same
// login ID is refused, so that person cannot swap the victim's login for a
// login into their own account. The victim's own login goes through, and
// the page the browser ends on shows the code the victim's client shows.
func TestOIDCLoginIsBoundToItsClient(t *testing.T) {
	issuer := runIssuer(t, nil)
	cfg := DefaultConfig()
	cfg.OpenRegistration = false
	cfg.OIDC = []OIDCProvider{providerCfg("mock", issuer)}
	s, _ := newTestService(t, cfg)

	victimSecret := "victim-secret-" + strings.Repeat("v", 20)
	victimID := wire.LoginID(victimSecret)
	victimURL, err := s.StartLogin(t.Context(), "mock", victimID)
	if err != nil {
		t.Fatal(err)
	}

	issuer.QueueUser(&mockoidc.MockUser{Subject: "victim"})
	code, state, _ := authorize(t, s, victimURL)
	confirm, err := s.FinishLogin(t.Context(), "mock", code, state)
	if err != nil {
		t.Fatal(err)
	}
	if confirm != wire.LoginCode(victimID) {
		t.Fatalf("the page shows code %q, the victim's client %q", confirm, wire.LoginCode(victimID))
	}

	// Before the victim's client collects its ticket, the attacker starts
	// a login with the victim's login ID and logs in with their own
	// account, hoping the victim's client collects that one.
	if attackerURL, err := s.StartLogin(t.Context(), "mock", victimID); !errors.Is(err, ErrLoginInUse) {
		issuer.QueueUser(&mockoidc.MockUser{Subject: "mallory"})
		code, state, _ := authorize(t, s, attackerURL)
		_, _ = s.FinishLogin(t.Context(), "mock", code, state)
		t.Errorf("a second login with the victim's login ID: %v, want ErrLoginInUse", err)
	}

	// The attacker polls with what they know: the login ID.
	if !pending(t, s, victimID) {
		t.Fatal("the login ID alone collected the victim's ticket")
	}

	// Positive control: the victim's client collects the ticket of the
	// victim's account.
	tk, _, ok, err := s.PollTicket(t.Context(), victimSecret)
	if err != nil || !ok {
		t.Fatalf("victim's poll: %v %v", ok, err)
	}
	if a, err := s.logins.peekTicket(tk); err != nil || a.Subject != "victim" {
		t.Fatalf("the victim's ticket is for %+v (%v), want the victim's account", a, err)
	}
}

// A login ID stays used for as long as the login started with it lives,
// even when its client started polling long before the browser opened the
// start address.
func TestLoginIDStartsOneLoginForItsLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLogins()
		id := wire.LoginID("early-poller-secret-aaaaaa")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, _, ok, err := l.poll(ctx, id); ok || err != nil {
			t.Fatalf("poll before the start: %v %v", ok, err)
		}
		time.Sleep(LoginTTL - time.Minute)
		if _, _, err := l.begin("mock", id, "verifier"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute) // past the first poll's slot, inside the login
		if _, _, err := l.begin("mock", id, "verifier"); !errors.Is(err, ErrLoginInUse) {
			t.Fatalf("second start inside the first login's lifetime: %v", err)
		}
		time.Sleep(LoginTTL)
		if _, _, err := l.begin("mock", id, "verifier"); err != nil {
			t.Fatalf("start after the first login expired: %v", err)
		}
	})
}
