// Package keyregistry is the node side of Volo's key registry: registration
// (nonces, OpenID Connect tickets), user chains in the store and the DHT,
// gossip of accepted chains, lookups, device-linking mailboxes and the
// anchoring queue.
package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
)

// Topic is the gossipsub topic on which nodes announce accepted chains.
// Each message is one Record, the same bytes as the DHT value.
const Topic = "/volo/registry/1"

// Timeouts and intervals of the registry's network work.
const (
	// PublishTimeout bounds the DHT put of a changed chain.
	PublishTimeout = 30 * time.Second
	// LookupTimeout bounds a DHT lookup of a chain this node does not hold.
	LookupTimeout = 30 * time.Second
	// SweepInterval is how often expired nonces, logins and mailboxes are
	// dropped (they are also dropped whenever they are looked at).
	SweepInterval = time.Minute
	// lockStripes is the number of per-user locks serialising changes.
	lockStripes = 64
)

var (
	// ErrInvalidProof reports a registration proof that does not decode or
	// verify.
	ErrInvalidProof = errors.New("keyregistry: invalid registration proof")
	// ErrInvalidLink reports a link that does not decode or does not verify
	// on the chain (signature, signer, kind).
	ErrInvalidLink = errors.New("keyregistry: invalid link")
	// ErrStaleChain reports a link that does not follow the newest version
	// of the chain.
	ErrStaleChain = errors.New("keyregistry: link does not follow the newest chain")
	// ErrAlreadyRegistered reports an account or a user that exists.
	ErrAlreadyRegistered = errors.New("keyregistry: already registered")
	// ErrUserNotFound reports a user neither the store nor the DHT has.
	ErrUserNotFound = errors.New("keyregistry: user not found")
	// ErrTicketRequired reports a registration without a ticket on a node
	// that requires one.
	ErrTicketRequired = fmt.Errorf("%w: a ticket is required", ErrBadTicket)
)

// Service is the key registry of one node.
type Service struct {
	cfg       Config
	host      *p2p.Host
	db        *store.Prefixed
	d         *store.Datastore
	anchors   AnchorQueue
	log       *slog.Logger
	publicURL func() string
	client    *http.Client

	nonces     *nonceStore
	logins     *logins
	rendezvous *rendezvous
	providers  map[string]*provider
	names      []string

	locks    [lockStripes]sync.Mutex
	seed     maphash.Seed
	regMu    sync.Mutex // serialises the account check and write of registrations
	topic    *pubsub.Topic
	sub      *pubsub.Subscription
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	m        metrics
	am       anchorMetrics
	mirror   mirror
	stopOnce sync.Once
	verified verifiedRecords
}

type metrics struct {
	registrations prometheus.Counter
	links         prometheus.Counter
	lookups       *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	gossip        *prometheus.CounterVec
	publishErrors prometheus.Counter
	republished   prometheus.Counter
}

// Option configures what New builds besides Config.
type Option func(*Service)

// WithHTTPClient sets the client used to reach OpenID Connect providers
// (default http.DefaultClient).
func WithHTTPClient(c *http.Client) Option { return func(s *Service) { s.client = c } }

// New builds the registry and registers the volo-user record validator and
// the gossip topic validator on host. publicURL returns the API's public
// base URL, used in OAuth redirect URLs. Its metrics go to reg.
func New(cfg Config, host *p2p.Host, db *store.Prefixed, anchors AnchorQueue, log *slog.Logger,
	reg prometheus.Registerer, publicURL func() string, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg: cfg, host: host, db: db, d: db.Datastore(), anchors: anchors, log: log,
		publicURL:  publicURL,
		client:     http.DefaultClient,
		nonces:     newNonceStore(cfg.NonceTTL.Std(), cfg.MaxNoncesPerClient, cfg.MaxNonces),
		logins:     newLogins(),
		rendezvous: newRendezvous(),
		providers:  make(map[string]*provider),
		seed:       maphash.MakeSeed(),
	}
	for _, o := range opts {
		o(s)
	}
	for _, p := range cfg.OIDC {
		s.providers[p.Name] = &provider{cfg: p, client: s.client}
		s.names = append(s.names, p.Name)
	}
	s.m = metrics{
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_registrations_total", Help: "Users registered on this node."}),
		links: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_links_total", Help: "Links appended to chains through this node."}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_registry_lookups_total", Help: "Chains served, by where they were found (store, dht)."}, []string{"source"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_registry_rejections_total", Help: "Requests and records refused, by reason."}, []string{"reason"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_registry_gossip_received_total", Help: "Chain announcements received, by outcome (stored, same, rollback, forked)."}, []string{"outcome"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_publish_errors_total", Help: "DHT puts of chains that failed (retried by the next republish)."}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_republished_total", Help: "Chains put in the DHT again by the periodic republish."}),
	}
	cs := []prometheus.Collector{s.m.registrations, s.m.links, s.m.lookups, s.m.rejections, s.m.gossip, s.m.publishErrors, s.m.republished,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volo_registry_nonces", Help: "Unexpired, unused registration nonces."},
			func() float64 { return float64(s.nonces.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volo_registry_mailboxes", Help: "Live device-linking mailboxes."},
			func() float64 { return float64(s.rendezvous.Len()) }),
	}
	s.am = newAnchorMetrics()
	cs = append(cs, s.am.collectors()...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("keyregistry: register metrics: %w", err)
		}
	}
	if err := s.initMirror(); err != nil {
		return nil, err
	}
	if err := host.Validators().Add(Namespace, Validator{}); err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	if err := host.PubSub().RegisterTopicValidator(Topic, s.validateGossip); err != nil {
		return nil, fmt.Errorf("keyregistry: gossip validator: %w", err)
	}
	return s, nil
}

// Start joins the gossip topic, starts discovering the OIDC providers in
// the background (a provider that is down does not stop the node) and
// starts the republish and sweep loops.
func (s *Service) Start(context.Context) error {
	if s.cfg.OpenRegistration {
		s.log.Warn("OPEN REGISTRATION: this node registers users without an OAuth login; use only for development",
			"setting", "registry.open_registration")
	}
	t, err := s.host.Topic(Topic)
	if err != nil {
		return fmt.Errorf("keyregistry: %w", err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		return fmt.Errorf("keyregistry: subscribe %s: %w", Topic, err)
	}
	s.topic, s.sub = t, sub
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, name := range s.names {
		p := s.providers[name]
		s.wg.Go(func() { p.discoverLoop(s.ctx, s.log) })
	}
	if err := s.startMirror(); err != nil {
		sub.Cancel()
		s.cancel()
		return err
	}
	s.wg.Go(s.readGossip)
	s.wg.Go(s.republishLoop)
	s.wg.Go(s.sweepLoop)
	return nil
}

// Stop stops the background work and leaves the gossip topic.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		if s.cancel == nil {
			return
		}
		s.cancel()
		s.sub.Cancel()
		s.stopMirror()
		s.wg.Wait()
	})
	return nil
}

func (s *Service) reject(reason string) { s.m.rejections.WithLabelValues(reason).Inc() }

func (s *Service) lock(user e2ee.UserID) *sync.Mutex {
	return &s.locks[maphash.Bytes(s.seed, user.Bytes())%lockStripes]
}

// Store layout inside the registry's view.
func chainKey(user e2ee.UserID) ds.Key { return ds.NewKey("/chain/" + user.String()) }
func accountKey(a Account) ds.Key      { return ds.NewKey("/account/" + a.key()) }

const chainPrefix = "/chain/"

// Nonce issues a registration nonce to client (its IP address).
func (s *Service) Nonce(client string) ([]byte, time.Time, error) {
	n, exp, err := s.nonces.Issue(client)
	if err != nil {
		s.reject("too_many_nonces")
	}
	return n, exp, err
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
// for the client waiting on loginID, and returns the URL to send the
// browser to.
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
// registration ticket bound to the token's issuer and subject, which the
// client polling the login ID receives.
func (s *Service) FinishLogin(ctx context.Context, name, code, state string) error {
	p, ok := s.providers[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownProvider, name)
	}
	st, err := s.logins.takeState(name, state)
	if err != nil {
		s.reject("bad_state")
		return err
	}
	if err := p.discover(ctx); err != nil {
		return err
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
		return fmt.Errorf("%w: %s: %v", ErrOIDCExchange, name, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	acct, err := s.verifyIDToken(ctx, p, raw, st.nonce)
	if err != nil {
		s.reject("bad_id_token")
		return err
	}
	if err := s.logins.complete(st.loginID, acct); err != nil {
		return err
	}
	s.log.Info("OIDC login completed", "provider", name)
	return nil
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

// PollTicket waits (long poll) for the ticket of loginID; ok is false when
// the wait ended first.
func (s *Service) PollTicket(ctx context.Context, loginID string) (ticket string, expires time.Time, ok bool, err error) {
	if !loginIDPattern.MatchString(loginID) {
		return "", time.Time{}, false, ErrBadLoginID
	}
	return s.logins.poll(ctx, loginID)
}

// Register verifies and publishes a new user: proof is a registration proof
// over a nonce this node issued (used up by the attempt), genesis the
// user's first link, ticket a registration ticket (optional only with open
// registration). It returns the new user's chain.
func (s *Service) Register(ctx context.Context, genesis, proof []byte, ticket string) (Chain, error) {
	c, err := s.register(ctx, genesis, proof, ticket)
	if err != nil {
		s.reject(reasonOf(err))
		return Chain{}, err
	}
	s.m.registrations.Inc()
	s.publish(ctx, c)
	return c, nil
}

func (s *Service) register(ctx context.Context, genesis, proof []byte, ticket string) (Chain, error) {
	p, err := e2ee.DecodeRegistrationProof(proof)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	if err := s.nonces.Consume(p.Nonce); err != nil {
		return Chain{}, err
	}
	var acct Account
	switch {
	case ticket != "":
		if acct, err = s.logins.peekTicket(ticket); err != nil {
			return Chain{}, err
		}
	case !s.cfg.OpenRegistration:
		return Chain{}, ErrTicketRequired
	}
	if len(genesis) > e2ee.MaxLinkSize {
		return Chain{}, fmt.Errorf("%w: %d bytes", ErrInvalidLink, len(genesis))
	}
	link, err := e2ee.DecodeLink(genesis)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	set, err := e2ee.VerifyRegistrationGenesis(p, p.Nonce, link)
	if err != nil {
		var ce *e2ee.ChainError
		if errors.As(err, &ce) {
			return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
		}
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	c := Chain{Set: set, Links: [][]byte{link.Encode()}}
	user := set.User()

	s.regMu.Lock()
	defer s.regMu.Unlock()
	// The user's lock too: a gossiped copy of the same user must not be
	// written between the check and the write.
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	if ok, err := s.d.Has(ctx, chainKey(user)); err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	} else if ok {
		return Chain{}, fmt.Errorf("%w: user %s exists", ErrAlreadyRegistered, user)
	}
	if ticket != "" {
		if ok, err := s.d.Has(ctx, accountKey(acct)); err != nil {
			return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
		} else if ok {
			return Chain{}, fmt.Errorf("%w: the account has a user", ErrAlreadyRegistered)
		}
		if _, err := s.logins.takeTicket(ticket); err != nil {
			return Chain{}, err
		}
	}
	// The chain, the account and the anchor queue entry: one transaction.
	err = s.anchors.EnqueueWith(user, link, func(txn *badger.Txn) error {
		err := txn.Set(s.db.Key(chainKey(user).Bytes()), c.Record().Encode())
		if ticket != "" {
			err = errors.Join(err, txn.Set(s.db.Key(accountKey(acct).Bytes()), user.Bytes()))
		}
		return err
	})
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	s.log.Info("user registered", "user", user.String(), "oauth", ticket != "")
	return c, nil
}

// AppendLink verifies one link on the newest chain of user the node can
// find and, if it follows it, stores, publishes and queues it.
func (s *Service) AppendLink(ctx context.Context, user e2ee.UserID, encoded []byte) (Chain, error) {
	c, err := s.appendLink(ctx, user, encoded)
	if err != nil {
		s.reject(reasonOf(err))
		return Chain{}, err
	}
	s.m.links.Inc()
	s.publish(ctx, c)
	return c, nil
}

func (s *Service) appendLink(ctx context.Context, user e2ee.UserID, encoded []byte) (Chain, error) {
	if len(encoded) > e2ee.MaxLinkSize {
		return Chain{}, fmt.Errorf("%w: %d bytes", ErrInvalidLink, len(encoded))
	}
	link, err := e2ee.DecodeLink(encoded)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.local(ctx, user)
	if errors.Is(err, ErrUserNotFound) || (err == nil && link.Seq > cur.Version()+1) {
		// Unknown here, or this node is behind: ask the network.
		if net, nerr := s.fetch(ctx, user); nerr == nil && (err != nil || e2ee.Relate(cur.Set, net.Set) == e2ee.ChainExtends) {
			cur, err = net, nil
			if serr := s.save(ctx, cur); serr != nil {
				return Chain{}, serr
			}
		}
	}
	if err != nil {
		return Chain{}, err
	}
	head := cur.Set.Head()
	if link.Seq != head.Version+1 || !link.Prev.Equal(head.Link) {
		return Chain{}, fmt.Errorf("%w: link %d after %s, newest is version %d (%s)", ErrStaleChain, link.Seq, link.Prev, head.Version, head.Link)
	}
	set, err := cur.Set.Apply(link)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrInvalidLink, err)
	}
	next := Chain{Set: set, Links: append(cur.Links[:len(cur.Links):len(cur.Links)], link.Encode())}
	// The chain and the anchor queue entry: one transaction.
	err = s.anchors.EnqueueWith(user, link, func(txn *badger.Txn) error {
		return txn.Set(s.db.Key(chainKey(user).Bytes()), next.Record().Encode())
	})
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	s.log.Info("link appended", "user", user.String(), "version", set.Version(), "kind", link.Kind)
	return next, nil
}

// Lookup returns user's chain from the store, or else from the DHT
// (verified, then kept in the store).
func (s *Service) Lookup(ctx context.Context, user e2ee.UserID) (Chain, error) {
	c, err := s.local(ctx, user)
	if err == nil {
		s.m.lookups.WithLabelValues("store").Inc()
		return c, nil
	}
	if !errors.Is(err, ErrUserNotFound) {
		return Chain{}, err
	}
	c, err = s.fetch(ctx, user)
	if err != nil {
		return Chain{}, err
	}
	if err := s.keep(ctx, c); err != nil {
		return Chain{}, err
	}
	s.m.lookups.WithLabelValues("dht").Inc()
	return c, nil
}

// local reads user's chain from the store.
func (s *Service) local(ctx context.Context, user e2ee.UserID) (Chain, error) {
	v, err := s.d.Get(ctx, chainKey(user))
	if errors.Is(err, ds.ErrNotFound) {
		return Chain{}, fmt.Errorf("%w: %s", ErrUserNotFound, user)
	}
	if err != nil {
		return Chain{}, fmt.Errorf("keyregistry: store: %w", err)
	}
	// Verified before it was stored; verified again, as every read of a
	// chain is, so that a damaged store cannot serve a bad chain — unless
	// these exact bytes were verified before (the cache is keyed by their
	// hash, so damaged bytes miss it).
	return s.verified.decode(v, user)
}

// fetch reads user's chain from the DHT and verifies it.
func (s *Service) fetch(ctx context.Context, user e2ee.UserID) (Chain, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	v, err := s.host.DHT().GetValue(ctx, RecordKey(user))
	if errors.Is(err, routing.ErrNotFound) {
		return Chain{}, fmt.Errorf("%w: %s", ErrUserNotFound, user)
	}
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %s: dht: %v", ErrUserNotFound, user, err)
	}
	c, err := DecodeRecord(v, user)
	if err != nil {
		s.reject("bad_record")
		return Chain{}, err
	}
	return c, nil
}

// save writes c to the store.
func (s *Service) save(ctx context.Context, c Chain) error {
	if err := s.d.Put(ctx, chainKey(c.Set.User()), c.Record().Encode()); err != nil {
		return fmt.Errorf("keyregistry: store: %w", err)
	}
	return nil
}

// keep stores c if the node has no chain of its user or c extends it, and
// reports how c relates to what the node held.
func (s *Service) keep(ctx context.Context, c Chain) error {
	_, err := s.consider(ctx, c)
	return err
}

// consider stores c when it is new to the node or extends its chain, and
// says how c related to the chain the node held.
func (s *Service) consider(ctx context.Context, c Chain) (e2ee.ChainRelation, error) {
	user := c.Set.User()
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.local(ctx, user)
	switch {
	case errors.Is(err, ErrUserNotFound):
		return e2ee.ChainExtends, s.save(ctx, c)
	case err != nil:
		return 0, err
	}
	rel := e2ee.Relate(cur.Set, c.Set)
	if rel == e2ee.ChainExtends {
		return rel, s.save(ctx, c)
	}
	return rel, nil
}

// publish puts c in the DHT and announces it on the gossip topic. A failure
// is logged and counted: the chain is stored, and the next republish puts
// it again.
func (s *Service) publish(ctx context.Context, c Chain) {
	rec := c.Record().Encode()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PublishTimeout)
	defer cancel()
	if err := s.host.DHT().PutValue(pctx, RecordKey(c.Set.User()), rec); err != nil {
		s.m.publishErrors.Inc()
		level := slog.LevelWarn
		if s.host.RoutingTableSize() == 0 {
			level = slog.LevelDebug // a node alone has no one to put it on
		}
		s.log.Log(pctx, level, "DHT put of a chain failed; the republish will retry", "user", c.Set.User().String(), "version", c.Version(), "err", err)
	}
	if s.topic != nil {
		if err := s.topic.Publish(pctx, rec); err != nil {
			s.log.Warn("gossip of a chain failed", "user", c.Set.User().String(), "err", err)
		}
	}
}

// validateGossip is the topic validator: only records whose chain verifies
// are delivered or forwarded. The verified chain rides along to readGossip.
func (s *Service) validateGossip(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	c, err := decodeAnnouncement(msg.GetData())
	if err != nil {
		s.reject("bad_gossip")
		s.log.Debug("refused a gossiped chain", "from", msg.GetFrom().String(), "err", err)
		return pubsub.ValidationReject
	}
	msg.ValidatorData = c
	return pubsub.ValidationAccept
}

// decodeAnnouncement decodes and verifies one message of the gossip topic:
// a Record of any user.
func decodeAnnouncement(data []byte) (Chain, error) { return DecodeRecord(data, e2ee.UserID{}) }

// readGossip keeps the announced chains that are new to the node or extend
// its copy; rollbacks and forks are ignored with a log line.
func (s *Service) readGossip() {
	self := s.host.ID()
	for {
		msg, err := s.sub.Next(s.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == self {
			continue
		}
		c, ok := msg.ValidatorData.(Chain)
		if !ok {
			continue
		}
		rel, err := s.consider(s.ctx, c)
		switch {
		case err != nil:
			s.log.Error("store a gossiped chain", "user", c.Set.User().String(), "err", err)
		case rel == e2ee.ChainExtends:
			s.m.gossip.WithLabelValues("stored").Inc()
		case rel == e2ee.ChainSame:
			s.m.gossip.WithLabelValues("same").Inc()
		case rel == e2ee.ChainRollback:
			s.m.gossip.WithLabelValues("rollback").Inc()
			s.log.Info("ignored a gossiped chain older than ours", "user", c.Set.User().String(), "version", c.Version(), "from", msg.GetFrom().String())
		default:
			s.m.gossip.WithLabelValues("forked").Inc()
			s.log.Warn("ignored a gossiped chain that forks from ours", "user", c.Set.User().String(), "version", c.Version(), "from", msg.GetFrom().String())
		}
	}
}

// Republish puts every chain in the store in the DHT again.
func (s *Service) Republish(ctx context.Context) (int, error) {
	var recs [][]byte
	err := s.db.Iterate([]byte(chainPrefix), false, func(_, v []byte) error {
		recs = append(recs, bytes.Clone(v))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("keyregistry: republish: %w", err)
	}
	n := 0
	for _, v := range recs {
		c, err := DecodeRecord(v, e2ee.UserID{})
		if err != nil {
			s.log.Error("republish: stored chain does not verify", "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, PublishTimeout)
		err = s.host.DHT().PutValue(pctx, RecordKey(c.Set.User()), v)
		cancel()
		if err != nil {
			s.m.publishErrors.Inc()
			s.log.Warn("republish failed", "user", c.Set.User().String(), "err", err)
			continue
		}
		s.m.republished.Inc()
		n++
	}
	return n, ctx.Err()
}

func (s *Service) republishLoop() {
	every(s.ctx, s.cfg.RepublishInterval.Std(), func() {
		n, _ := s.Republish(s.ctx)
		s.log.Info("republished chains", "count", n)
	})
}

func (s *Service) sweepLoop() {
	every(s.ctx, SweepInterval, func() {
		s.nonces.Len()
		s.rendezvous.Len()
		s.logins.mu.Lock()
		s.logins.sweep(time.Now())
		s.logins.mu.Unlock()
	})
}

// every runs fn each interval, first one interval from now, until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// PostMessage appends a sealed linking message to mailbox rid.
func (s *Service) PostMessage(rid e2ee.RendezvousID, data []byte) (uint64, error) {
	seq, err := s.rendezvous.Post(rid, data)
	if err != nil {
		s.reject(reasonOf(err))
	}
	return seq, err
}

// WaitMessages long-polls mailbox rid for messages after seq after (-1: all).
func (s *Service) WaitMessages(ctx context.Context, rid e2ee.RendezvousID, after int64) []MailboxMessage {
	return s.rendezvous.Wait(ctx, rid, after)
}

// reasonOf names an error for the rejections metric.
func reasonOf(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrBadNonce, "bad_nonce"}, {ErrBadTicket, "bad_ticket"}, {ErrInvalidProof, "invalid_proof"},
		{ErrInvalidLink, "invalid_link"}, {ErrStaleChain, "stale_chain"}, {ErrAlreadyRegistered, "already_registered"},
		{ErrUserNotFound, "user_not_found"}, {ErrMailboxFull, "mailbox_full"}, {ErrTooManyMailboxes, "too_many_mailboxes"},
		{ErrMessageTooLarge, "too_large"}, {ErrEmptyMessage, "empty_message"}, {ErrBadRecord, "bad_record"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
