// Package keyregistry is the node side of Volo's key registry: registration
// (nonces, OpenID Connect tickets), user chains in the store and the DHT,
// gossip of accepted chains, lookups, device-linking mailboxes and the
// anchoring queue. The anchor formats and the offline verifier are in
// package anchorproof.
package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/store"
)

// lockStripes is the number of per-user locks serialising changes.
const lockStripes = 64

// Service is the key registry of one node.
type Service struct {
	cfg       Config
	net       Network
	db        *store.Prefixed
	d         *store.Datastore
	anchors   AnchorQueue
	log       *slog.Logger
	promReg   prometheus.Registerer
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
	val      Validator // the volo-user policy: DHT validator, gossip and fetches
}

type metrics struct {
	registrations prometheus.Counter
	links         prometheus.Counter
	lookups       *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	gossip        *prometheus.CounterVec
	publishErrors prometheus.Counter
	republished   prometheus.Counter
	forks         prometheus.Counter
}

// Option configures what New builds besides Config.
type Option func(*Service)

// WithHTTPClient sets the client used to reach OpenID Connect providers
// (default http.DefaultClient).
func WithHTTPClient(c *http.Client) Option { return func(s *Service) { s.client = c } }

// WithLogger sets the logger (default: a logger that discards everything).
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) {
		if l != nil {
			s.log = l
		}
	}
}

// WithMetrics sets the Prometheus registry the registry's metrics are
// registered with (default: a private registry, so the metrics are
// counted but not exported).
func WithMetrics(reg prometheus.Registerer) Option {
	return func(s *Service) {
		if reg != nil {
			s.promReg = reg
		}
	}
}

// New builds the registry over net, keeping its state in db and queueing
// every accepted link in anchors. publicURL returns the API's public base
// URL, used in OAuth redirect URLs. New starts nothing and sends nothing:
// it registers the volo-user record validator with net.Validators (the DHT
// needs it before the node starts) and its metrics; Start does the rest.
func New(cfg Config, net Network, db *store.Prefixed, anchors AnchorQueue, publicURL func() string, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := net.check(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, net: net, db: db, d: db.Datastore(), anchors: anchors,
		log:        slog.New(slog.DiscardHandler),
		promReg:    prometheus.NewRegistry(),
		publicURL:  publicURL,
		client:     http.DefaultClient,
		nonces:     newNonceStore(cfg.NonceTTL.Std(), cfg.MaxNoncesPerClient, cfg.MaxNonces),
		logins:     newLogins(),
		rendezvous: newRendezvous(),
		providers:  make(map[string]*provider),
		seed:       maphash.MakeSeed(),
		mirror:     mirror{queue: make(chan Announcement, mirrorQueue)},
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
			Name: "volo_registry_gossip_received_total", Help: "Chain announcements received, by outcome (stored, same, rollback, fork_won, fork_lost)."}, []string{"outcome"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_publish_errors_total", Help: "DHT puts of chains that failed (retried by the next republish)."}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_republished_total", Help: "Chains put in the DHT again by the periodic republish."}),
	}
	s.m.forks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "volo_registry_forks_total", Help: "Forks of user chains seen (the fork rule kept one branch, the other is remembered)."})
	cs := []prometheus.Collector{s.m.registrations, s.m.links, s.m.lookups, s.m.rejections, s.m.gossip, s.m.publishErrors, s.m.republished, s.m.forks,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volo_registry_nonces", Help: "Unexpired, unused registration nonces."},
			func() float64 { return float64(s.nonces.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volo_registry_mailboxes", Help: "Live device-linking mailboxes."},
			func() float64 { return float64(s.rendezvous.Len()) }),
	}
	s.am = newAnchorMetrics()
	cs = append(cs, s.am.collectors()...)
	for _, c := range cs {
		if err := s.promReg.Register(c); err != nil {
			return nil, fmt.Errorf("keyregistry: register metrics: %w", err)
		}
	}
	s.val = Validator{
		AllowDevelopment: cfg.AllowDevelopmentUsers,
		budget: newNewUsers(cfg.NewUsersPerAttester, cfg.NewUsersWindow.Std(), s.holds, s.log,
			func() { s.reject("attest_budget") }),
		anchored: s.anchoredAt,
	}
	if err := net.Validators.Add(Namespace, s.val); err != nil {
		return nil, fmt.Errorf("keyregistry: %w", err)
	}
	return s, nil
}

// Start registers the gossip validators and joins the chain and anchor
// topics, serves BatchProtocol, starts discovering the OIDC providers in
// the background (a provider that is down does not stop the node) and
// starts the gossip, mirroring, republish and sweep loops. On an error it
// undoes what it did.
func (s *Service) Start(context.Context) (err error) {
	if s.cfg.AllowDevelopmentUsers {
		s.log.Warn("DEVELOPMENT USERS: this node accepts users registered without an OAuth login by any node; use only for development",
			"setting", "registry.allow_development_users")
	}
	if s.cfg.OpenRegistration {
		s.log.Warn("OPEN REGISTRATION: this node registers users without an OAuth login; use only for development",
			"setting", "registry.open_registration")
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := s.net.PubSub.RegisterTopicValidator(Topic, s.validateGossip); err != nil {
		return fmt.Errorf("keyregistry: gossip validator: %w", err)
	}
	undo = append(undo, func() { _ = s.net.PubSub.UnregisterTopicValidator(Topic) })
	t, err := s.net.PubSub.Topic(Topic)
	if err != nil {
		return fmt.Errorf("keyregistry: %w", err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		return fmt.Errorf("keyregistry: subscribe %s: %w", Topic, err)
	}
	undo = append(undo, sub.Cancel)
	if err := s.startMirror(); err != nil {
		return err
	}
	s.topic, s.sub = t, sub
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, name := range s.names {
		p := s.providers[name]
		s.wg.Go(func() { p.discoverLoop(s.ctx, s.log) })
	}
	s.wg.Go(s.readGossip)
	s.wg.Go(s.readAnnouncements)
	s.wg.Go(s.mirrorLoop)
	s.wg.Go(s.republishLoop)
	s.wg.Go(s.sweepLoop)
	return nil
}

// Stop stops the background work, leaves the gossip topics and removes
// the gossip validators and the BatchProtocol handler.
func (s *Service) Stop() error {
	s.stopOnce.Do(func() {
		if s.cancel == nil {
			return
		}
		s.cancel()
		s.sub.Cancel()
		s.stopMirror()
		_ = s.net.PubSub.UnregisterTopicValidator(Topic)
		s.wg.Wait()
	})
	return nil
}

func (s *Service) reject(reason string) { s.m.rejections.WithLabelValues(reason).Inc() }

func (s *Service) lock(user ident.UserID) *sync.Mutex {
	return &s.locks[maphash.Bytes(s.seed, user.Bytes())%lockStripes]
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
		{ErrMessageTooLarge, "too_large"}, {ErrEmptyMessage, "empty_message"}, {ErrUnattested, "unattested"},
		{ErrBadAttestation, "bad_attestation"}, {ErrDevelopmentUser, "development_user"}, {ErrAttestBudget, "attest_budget"},
		{ErrBadRecord, "bad_record"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
