// Package p2p is a Volo node's place in the network: the libp2p host, the
// Kademlia DHT with the validators of each record namespace, gossipsub, the
// node's identity on disk and the answer to "which peers are closest to key K".
package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// DHTProtocolPrefix keeps Volo's DHT apart from every other libp2p DHT:
	// its protocol is /volo/kad/1.0.0.
	DHTProtocolPrefix protocol.ID = "/volo"
	// DHTProtocol is the protocol the DHT speaks, and the protocol of the
	// "dht" role.
	DHTProtocol = DHTProtocolPrefix + "/kad/1.0.0"
	// RecordLifetime is how long a DHT record is kept without being
	// republished. Services that own records republish well inside it.
	RecordLifetime = 48 * time.Hour
	// RoleDHT is the role of every node: a DHT server.
	RoleDHT = "dht"
)

// Host is a running libp2p host with its DHT and gossipsub router.
type Host struct {
	cfg    Config
	log    *slog.Logger
	host   host.Host
	dht    *dht.IpfsDHT
	ps     *pubsub.PubSub
	vals   *Validators
	scores *scores
	listen []ma.Multiaddr
	boot   []peer.AddrInfo

	ctx    context.Context // lives from New until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	roles  map[string]protocol.ID
	topics map[string]*pubsub.Topic
}

// Option configures what New builds besides Config.
type Option func(*options)

type options struct {
	datastore ds.Batching
	logger    *slog.Logger
	userAgent string
}

// WithDatastore keeps the DHT's records in d instead of in memory.
func WithDatastore(d ds.Batching) Option { return func(o *options) { o.datastore = d } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithUserAgent sets the agent string peers see through identify.
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// New builds the host, the DHT (server mode, protocol prefix /volo) and the
// gossipsub router. It does not listen yet: Start does.
func New(cfg Config, identity crypto.PrivKey, opts ...Option) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{logger: slog.New(slog.DiscardHandler), userAgent: "volo"}
	for _, opt := range opts {
		opt(&o)
	}
	listen, err := parseMultiaddrs(cfg.Listen)
	if err != nil {
		return nil, err
	}
	boot, err := ParseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}

	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	scaled := limits.Scale(int64(cfg.Resources.MaxMemoryMB)<<20, cfg.Resources.MaxFileDescriptors)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(scaled), rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.ConnManager.LowWater, cfg.ConnManager.HighWater,
		connmgr.WithGracePeriod(cfg.ConnManager.GracePeriod.Std()))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(identity),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.UserAgent(o.userAgent),
	)
	if err != nil {
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("p2p: libp2p host: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	vals := NewValidators()
	dhtOpts := []dht.Option{
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTProtocolPrefix),
		dht.Validator(vals),
		dht.MaxRecordAge(RecordLifetime),
		dht.BootstrapPeers(boot...),
	}
	if o.datastore != nil {
		dhtOpts = append(dhtOpts, dht.ValueDatastore(o.datastore))
	}
	kad, err := dht.New(h, dhtOpts...)
	if err != nil {
		cancel()
		h.Close()
		return nil, fmt.Errorf("p2p: dht: %w", err)
	}
	// Flood publishing sends a node's own messages to every peer in the
	// topic rather than only its mesh: Volo's topics carry few, small
	// announcements, and this delivers them even before the mesh forms.
	// Peer scoring (score.go) lowers the score of peers that send
	// messages the topic validators refuse, down to graylisting them.
	sc := &scores{}
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true),
		pubsub.WithPeerScore(PeerScoreParams(), PeerScoreThresholds()),
		pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(sc.inspect), ScoreInspectInterval))
	if err != nil {
		cancel()
		kad.Close()
		h.Close()
		return nil, fmt.Errorf("p2p: gossipsub: %w", err)
	}
	return &Host{
		cfg:    cfg,
		log:    o.logger,
		host:   h,
		dht:    kad,
		ps:     ps,
		vals:   vals,
		scores: sc,
		listen: listen,
		boot:   boot,
		ctx:    ctx,
		cancel: cancel,
		roles:  map[string]protocol.ID{RoleDHT: DHTProtocol},
		topics: make(map[string]*pubsub.Topic),
	}, nil
}

// Start listens on every configured address (each failure is an error that
// names the address) and starts bootstrapping in the background: each
// bootstrap peer is retried until it answers or the host stops.
func (h *Host) Start(ctx context.Context) error {
	for _, a := range h.listen {
		if err := h.host.Network().Listen(a); err != nil {
			return fmt.Errorf("p2p: listen on %s: %w", a, err)
		}
	}
	h.log.Info("p2p listening", "peer_id", h.ID().String(), "addrs", fmt.Sprint(h.FullAddrs()))
	if len(h.boot) == 0 {
		return nil
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.bootstrap(h.ctx)
	}()
	return nil
}

// Stop stops bootstrapping, gossipsub, the DHT and the host, in that order.
func (h *Host) Stop() error {
	h.cancel()
	h.wg.Wait()
	h.mu.Lock()
	for name, t := range h.topics {
		t.Close()
		delete(h.topics, name)
	}
	h.mu.Unlock()
	var errs []error
	if err := h.dht.Close(); err != nil {
		errs = append(errs, fmt.Errorf("p2p: close dht: %w", err))
	}
	if err := h.host.Close(); err != nil {
		errs = append(errs, fmt.Errorf("p2p: close host: %w", err))
	}
	return errors.Join(errs...)
}

// ID is the node's peer ID.
func (h *Host) ID() peer.ID { return h.host.ID() }

// Libp2p returns the underlying libp2p host, for services that open streams.
func (h *Host) Libp2p() host.Host { return h.host }

// DHT returns the node's Kademlia DHT.
func (h *Host) DHT() *dht.IpfsDHT { return h.dht }

// PubSub returns the node's gossipsub router.
func (h *Host) PubSub() *pubsub.PubSub { return h.ps }

// Validators is the registry services add their record validators to.
func (h *Host) Validators() *Validators { return h.vals }

// Health checks the host (open and listening) and the DHT (running); a
// nil error means the component is up.
func (h *Host) Health() map[string]error {
	var hostErr, dhtErr error
	switch {
	case h.ctx.Err() != nil:
		hostErr = errors.New("closed")
	case len(h.host.Network().ListenAddresses()) == 0:
		hostErr = errors.New("not listening")
	}
	if h.dht.Context().Err() != nil {
		dhtErr = errors.New("closed")
	}
	return map[string]error{"host": hostErr, "dht": dhtErr}
}

// FullAddrs returns the host's addresses with /p2p/<peer ID> appended, as
// another node would dial them.
func (h *Host) FullAddrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Peers is the number of peers the host is connected to.
func (h *Host) Peers() int { return len(h.host.Network().Peers()) }

// RoutingTableSize is the number of peers in the DHT's routing table.
func (h *Host) RoutingTableSize() int { return h.dht.RoutingTable().Size() }

// RefreshRoutingTable runs a DHT routing table refresh (a lookup per
// bucket) and waits for it to finish.
func (h *Host) RefreshRoutingTable(ctx context.Context) error {
	select {
	case err := <-h.dht.RefreshRoutingTable():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RoutingTablePeers lists the peers in the DHT's routing table.
func (h *Host) RoutingTablePeers() []peer.ID { return h.dht.RoutingTable().ListPeers() }

// Handle makes the node speak proto with handler, and advertises role: peers
// learn the protocol through identify, and ClosestPeers selects by it.
func (h *Host) Handle(role string, proto protocol.ID, handler network.StreamHandler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.roles[role]; ok {
		return fmt.Errorf("p2p: role %q already served by %s", role, p)
	}
	h.roles[role] = proto
	h.host.SetStreamHandler(proto, handler)
	return nil
}

// Roles lists the roles the node serves, sorted.
func (h *Host) Roles() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.roles))
	for r := range h.roles {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Topic joins the gossipsub topic name, or returns the handle already
// joined: services on one node share one handle per topic. The topic is
// scored with TopicScoreParams.
func (h *Host) Topic(name string) (*pubsub.Topic, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.topics[name]; ok {
		return t, nil
	}
	t, err := h.ps.Join(name)
	if err != nil {
		return nil, fmt.Errorf("p2p: join topic %s: %w", name, err)
	}
	if err := t.SetScoreParams(TopicScoreParams()); err != nil {
		t.Close()
		return nil, fmt.Errorf("p2p: score topic %s: %w", name, err)
	}
	h.topics[name] = t
	return t, nil
}
