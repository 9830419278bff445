package keyregistry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/volo-chat/volo/wire"
)

// Limits and lifetimes of the OpenID Connect login.
const (
	// LoginTTL is how long a started login (its state, nonce and PKCE
	// verifier) and a client's wait for its ticket stay valid.
	LoginTTL = 10 * time.Minute
	// TicketTTL is how long a registration ticket stays valid.
	TicketTTL = 10 * time.Minute
	// MaxPendingLogins bounds the started logins, the login IDs waited on
	// and the unused tickets, each.
	MaxPendingLogins = 4096
	// DiscoveryTimeout bounds one discovery of a provider's configuration.
	DiscoveryTimeout = 10 * time.Second
	// ExchangeTimeout bounds the code exchange and ID token verification.
	ExchangeTimeout = 15 * time.Second
	// discoveryRetryMin and discoveryRetryMax bound the wait between
	// background discovery attempts of a provider that is down.
	discoveryRetryMin = time.Second
	discoveryRetryMax = time.Minute
)

var (
	// ErrUnknownProvider reports a provider name not in the configuration.
	ErrUnknownProvider = errors.New("keyregistry: unknown OIDC provider")
	// ErrProviderUnavailable reports a provider whose discovery failed.
	ErrProviderUnavailable = errors.New("keyregistry: OIDC provider unavailable")
	// ErrBadLoginID reports a login ID that is not 22-64 characters of
	// base64url.
	ErrBadLoginID = errors.New("keyregistry: bad login ID")
	// ErrBadLoginSecret reports a login secret that is not 22-64
	// characters of base64url.
	ErrBadLoginSecret = errors.New("keyregistry: bad login secret")
	// ErrLoginInUse reports a login ID that a login was already started
	// with: each login ID starts one login.
	ErrLoginInUse = errors.New("keyregistry: a login was already started with this login ID")
	// ErrTooManyLogins reports MaxPendingLogins logins in progress.
	ErrTooManyLogins = errors.New("keyregistry: too many logins in progress")
	// ErrBadState reports a callback whose state is unknown, used or expired.
	ErrBadState = errors.New("keyregistry: unknown, used or expired login state")
	// ErrOIDCExchange reports a failed authorization-code exchange.
	ErrOIDCExchange = errors.New("keyregistry: authorization code exchange failed")
	// ErrBadIDToken reports an ID token that does not verify: signature,
	// issuer, audience, expiry or nonce.
	ErrBadIDToken = errors.New("keyregistry: ID token does not verify")
	// ErrBadTicket reports a registration ticket that is unknown, used or
	// expired.
	ErrBadTicket = errors.New("keyregistry: unknown, used or expired ticket")
)

var loginIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22,64}$`)

// ProviderInfo describes a configured provider to clients.
type ProviderInfo struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer"`
}

// Account is a verified OpenID Connect identity.
type Account struct {
	Issuer  string
	Subject string
}

// key is what the store keeps for the account: a hash, not the identity.
func (a Account) key() string {
	h := sha256.Sum256([]byte(a.Issuer + "\x00" + a.Subject))
	return fmt.Sprintf("%x", h)
}

// provider is one configured OpenID Connect provider, discovered once.
type provider struct {
	cfg    OIDCProvider
	client *http.Client

	mu       sync.Mutex
	oauth    oauth2.Config // without RedirectURL
	verifier *oidc.IDTokenVerifier
}

func (p *provider) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.verifier != nil
}

// discover fetches the provider's configuration unless it has it.
func (p *provider) discover(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.verifier != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, DiscoveryTimeout)
	defer cancel()
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, p.client), p.cfg.Issuer)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrProviderUnavailable, p.cfg.Name, err)
	}
	scopes := []string{oidc.ScopeOpenID}
	for _, s := range p.cfg.Scopes {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	p.oauth = oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     op.Endpoint(),
		Scopes:       scopes,
	}
	p.verifier = op.VerifierContext(oidc.ClientContext(context.Background(), p.client), &oidc.Config{ClientID: p.cfg.ClientID})
	return nil
}

// discoverLoop retries discovery with backoff until it succeeds or ctx ends.
func (p *provider) discoverLoop(ctx context.Context, log *slog.Logger) {
	wait := discoveryRetryMin
	for {
		err := p.discover(ctx)
		if err == nil {
			log.Info("OIDC provider discovered", "provider", p.cfg.Name, "issuer", p.cfg.Issuer)
			return
		}
		log.Warn("OIDC provider discovery failed; retrying", "provider", p.cfg.Name, "issuer", p.cfg.Issuer, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, discoveryRetryMax)
	}
}

// logins holds the OpenID Connect logins in progress and the tickets they
// produced, in memory: all of it expires within minutes.
type logins struct {
	mu      sync.Mutex
	states  map[string]authState // by state parameter
	slots   map[string]*loginSlot
	tickets map[string]ticketEntry
}

type authState struct {
	provider string
	loginID  string
	verifier string // PKCE code verifier
	nonce    string
	expires  time.Time
}

// loginSlot is where a client waits for the ticket of its login ID.
type loginSlot struct {
	started bool // a login was started with the login ID
	expires time.Time
	done    chan struct{} // closed when ticket is set
	ticket  string
	tickExp time.Time
}

type ticketEntry struct {
	account Account
	expires time.Time
}

func newLogins() *logins {
	return &logins{
		states:  make(map[string]authState),
		slots:   make(map[string]*loginSlot),
		tickets: make(map[string]ticketEntry),
	}
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// begin records a new login and returns its state and nonce.
func (l *logins) begin(providerName, loginID, verifier string) (state, nonce string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.sweep(now)
	if len(l.states) >= MaxPendingLogins {
		return "", "", fmt.Errorf("%w: %d", ErrTooManyLogins, MaxPendingLogins)
	}
	s, err := l.slot(loginID, now)
	if err != nil {
		return "", "", err
	}
	if s.started {
		return "", "", ErrLoginInUse
	}
	// The slot, and so the refusal of another start, lives as long as the
	// state: a slot a poll made earlier would expire first.
	s.started, s.expires = true, now.Add(LoginTTL)
	state, nonce = randomToken(), randomToken()
	l.states[state] = authState{provider: providerName, loginID: loginID, verifier: verifier, nonce: nonce, expires: s.expires}
	return state, nonce, nil
}

// slot returns loginID's slot, making it when there is room. l.mu is held.
func (l *logins) slot(loginID string, now time.Time) (*loginSlot, error) {
	if s, ok := l.slots[loginID]; ok && now.Before(s.expires) {
		return s, nil
	}
	if len(l.slots) >= MaxPendingLogins {
		l.sweep(now)
		if len(l.slots) >= MaxPendingLogins {
			return nil, fmt.Errorf("%w: %d", ErrTooManyLogins, MaxPendingLogins)
		}
	}
	s := &loginSlot{expires: now.Add(LoginTTL), done: make(chan struct{})}
	l.slots[loginID] = s
	return s, nil
}

// takeState uses up state; it must belong to providerName and be unexpired.
func (l *logins) takeState(providerName, state string) (authState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.states[state]
	delete(l.states, state)
	if !ok || !time.Now().Before(st.expires) || st.provider != providerName {
		return authState{}, ErrBadState
	}
	return st, nil
}

// complete makes a ticket for account and hands it to loginID's slot.
func (l *logins) complete(loginID string, account Account) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.sweep(now)
	if len(l.tickets) >= MaxPendingLogins {
		return fmt.Errorf("%w: %d unused tickets", ErrTooManyLogins, MaxPendingLogins)
	}
	s, err := l.slot(loginID, now)
	if err != nil {
		return err
	}
	if s.ticket != "" {
		return ErrLoginInUse // one login per login ID; its ticket stays
	}
	t := randomToken()
	l.tickets[t] = ticketEntry{account: account, expires: now.Add(TicketTTL)}
	s.ticket, s.tickExp = t, now.Add(TicketTTL)
	s.expires = s.tickExp
	close(s.done)
	return nil
}

// poll waits up to LongPollTimeout for loginID's ticket. The ticket is
// handed out once; ok is false when the wait ended first.
func (l *logins) poll(ctx context.Context, loginID string) (ticket string, expires time.Time, ok bool, err error) {
	l.mu.Lock()
	s, err := l.slot(loginID, time.Now())
	l.mu.Unlock()
	if err != nil {
		return "", time.Time{}, false, err
	}
	timer := time.NewTimer(LongPollTimeout)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.slots[loginID]; cur == s && s.ticket != "" && time.Now().Before(s.tickExp) {
		delete(l.slots, loginID)
		return s.ticket, s.tickExp, true, nil
	}
	return "", time.Time{}, false, nil
}

// peekTicket returns the account of an unexpired, unused ticket.
func (l *logins) peekTicket(t string) (Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.tickets[t]
	if !ok || !time.Now().Before(e.expires) {
		return Account{}, ErrBadTicket
	}
	return e.account, nil
}

// takeTicket uses up ticket t.
func (l *logins) takeTicket(t string) (Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.tickets[t]
	delete(l.tickets, t)
	if !ok || !time.Now().Before(e.expires) {
		return Account{}, ErrBadTicket
	}
	return e.account, nil
}

// sweep drops everything expired. l.mu is held.
func (l *logins) sweep(now time.Time) {
	for k, v := range l.states {
		if !now.Before(v.expires) {
			delete(l.states, k)
		}
	}
	for k, v := range l.slots {
		if !now.Before(v.expires) {
			delete(l.slots, k)
		}
	}
	for k, v := range l.tickets {
		if !now.Before(v.expires) {
			delete(l.tickets, k)
		}
	}
}

// Providers lists the configured OIDC providers.
func (s *Service) Providers() []ProviderInfo {
	out := make([]ProviderInfo, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, ProviderInfo{Name: n, Issuer: s.providers[n].cfg.Issuer})
	}
	return out
}

// OpenRegistration reports whether registration needs no ticket.
func (s *Service) OpenRegistration() bool { return s.cfg.OpenRegistration }

// CallbackURL is the redirect URL of provider name.
func (s *Service) CallbackURL(name string) string {
	return s.publicURL() + "/v1/auth/oidc/" + url.PathEscape(name) + "/callback"
}

// StartLogin begins an authorization-code login with PKCE at provider name
// for the client waiting on loginID (wire.LoginID of the client's login
// secret), and returns the URL to send the browser to. Each login ID
// starts one login: another start with it is ErrLoginInUse.
func (s *Service) StartLogin(ctx context.Context, name, loginID string) (string, error) {
	p, ok := s.providers[name]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	if !loginIDPattern.MatchString(loginID) {
		return "", ErrBadLoginID
	}
	if err := p.discover(ctx); err != nil {
		return "", err
	}
	verifier := oauth2.GenerateVerifier()
	state, nonce, err := s.logins.begin(name, loginID, verifier)
	if errors.Is(err, ErrLoginInUse) {
		s.reject("login_in_use")
		return "", err
	}
	if err != nil {
		s.reject("too_many_logins")
		return "", err
	}
	p.mu.Lock()
	oc := p.oauth
	p.mu.Unlock()
	oc.RedirectURL = s.CallbackURL(name)
	return oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)), nil
}

// FinishLogin handles the provider's redirect: it uses up state, exchanges
// code with the PKCE verifier, verifies the ID token and makes a
// registration ticket bound to the token's issuer and subject, which only
// the client holding the login secret receives. It returns the login's
// confirmation code (wire.LoginCode), which the browser page shows.
func (s *Service) FinishLogin(ctx context.Context, name, code, state string) (string, error) {
	p, ok := s.providers[name]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	st, err := s.logins.takeState(name, state)
	if err != nil {
		s.reject("bad_state")
		return "", err
	}
	if err := p.discover(ctx); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, ExchangeTimeout)
	defer cancel()
	p.mu.Lock()
	oc := p.oauth
	p.mu.Unlock()
	oc.RedirectURL = s.CallbackURL(name)
	tok, err := oc.Exchange(context.WithValue(ctx, oauth2.HTTPClient, p.client), code, oauth2.VerifierOption(st.verifier))
	if err != nil {
		s.reject("oidc_exchange")
		return "", fmt.Errorf("%w: %s: %v", ErrOIDCExchange, name, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	acct, err := s.verifyIDToken(ctx, p, raw, st.nonce)
	if err != nil {
		s.reject("bad_id_token")
		return "", err
	}
	if err := s.logins.complete(st.loginID, acct); err != nil {
		return "", err
	}
	s.log.Info("OIDC login completed", "provider", name)
	return wire.LoginCode(st.loginID), nil
}

// verifyIDToken checks raw with go-oidc (signature against the issuer's
// keys, iss, aud = client ID, expiry) and its nonce.
func (s *Service) verifyIDToken(ctx context.Context, p *provider, raw, nonce string) (Account, error) {
	if raw == "" {
		return Account{}, fmt.Errorf("%w: no id_token in the token response", ErrBadIDToken)
	}
	p.mu.Lock()
	v := p.verifier
	p.mu.Unlock()
	if v == nil {
		return Account{}, fmt.Errorf("%w: %s", ErrProviderUnavailable, p.cfg.Name)
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return Account{}, fmt.Errorf("%w: %v", ErrBadIDToken, err)
	}
	if idt.Nonce != nonce {
		return Account{}, fmt.Errorf("%w: nonce mismatch", ErrBadIDToken)
	}
	if idt.Subject == "" {
		return Account{}, fmt.Errorf("%w: no subject", ErrBadIDToken)
	}
	return Account{Issuer: idt.Issuer, Subject: idt.Subject}, nil
}

// PollTicket waits (long poll) for the ticket of the login started with
// the login ID of secret (wire.LoginID); ok is false when the wait ended
// first. Only the holder of the secret gets the ticket: the login ID alone,
// which the browser's address shows, does not.
func (s *Service) PollTicket(ctx context.Context, secret string) (ticket string, expires time.Time, ok bool, err error) {
	if !loginIDPattern.MatchString(secret) {
		return "", time.Time{}, false, ErrBadLoginSecret
	}
	return s.logins.poll(ctx, wire.LoginID(secret))
}
