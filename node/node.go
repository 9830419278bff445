// Package node is the composition root of a Volo node: it builds every
// service from one Config, starts them in a fixed order and stops them in
// reverse, and owns the node's single database.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/relay"
	"github.com/volo-chat/volo/store"
)

// Version is the node software's version; release builds set it with
// -ldflags "-X github.com/volo-chat/volo/node.Version=…".
var Version = "0.1.0-dev"

// Layout of the data directory.
const (
	// StoreDir is the badger database, under the data directory.
	StoreDir = "store"
	// IdentityFile is the node's libp2p private key, under the data directory.
	IdentityFile = p2p.IdentityFile
)

// Key prefixes of the node's database, one per owner. No prefix may be a
// prefix of another.
const (
	prefixNode     = "node/"
	prefixDHT      = "dht/"
	prefixRegistry = "registry/"
	prefixRelay    = "relay/"
	prefixBackup   = "backup/"
)

// keyRunning is present in the store while the node runs: finding it at
// start-up means the previous run did not stop cleanly.
var keyRunning = []byte("running")

// Lifecycle is what every service of the node implements. Services are
// built in order by New, started in that order by Start and stopped in
// reverse by Stop. Stop releases everything the service holds, whether
// Start ran, failed or never ran: the node stops every service it built.
type Lifecycle interface {
	Start(ctx context.Context) error
	Stop() error
}

// Node is a running Volo node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	db       *store.DB
	meta     *store.Prefixed
	host     *p2p.Host
	api      *api.Server
	keys     *keyregistry.Service
	anchors  *keyregistry.StoreQueue
	relay    *relay.Service
	backup   *backupstore.Service
	registry *prometheus.Registry

	// devnet and anchoring: chain.go (nil when the chain config has none).
	devnet    *devnet.Devnet
	anchoring *keyregistry.Anchoring

	// services holds the services built so far, in start order.
	services []service
	// fault, when set (by tests), is asked before each step of building
	// and starting ("build" or "start", the step's name) and makes that
	// step fail with the error it returns.
	fault func(phase, step string) error

	// UncleanShutdown reports that the previous run on this data
	// directory did not stop cleanly.
	UncleanShutdown bool

	stopOnce sync.Once
	stopErr  error
}

// service is one built service and the name its errors and logs carry.
type service struct {
	name string
	svc  Lifecycle
}

// step builds one service of the node; a nil Lifecycle means the
// configuration has none for this step (no devnet, no anchoring).
type step struct {
	name  string
	build func() (Lifecycle, error)
}

// steps lists how the node is built, in start order; Stop goes through it
// in reverse. Each step may use what the steps before it built:
//
//   - p2p: the libp2p host, the DHT and gossipsub;
//   - metrics: the node's own collectors (nothing to start or stop);
//   - chain: the embedded devnet (chain.backend = devnet), listening before
//     anything dials it;
//   - registry: the key registry and its anchor queue;
//   - anchoring: anchors accepted links on the chain (not with backend none);
//   - relay, backup: the node-to-node services;
//   - api: the HTTP server, last, so that clients reach only a node whose
//     services all run.
func (n *Node) steps(key crypto.PrivKey) []step {
	return []step{
		{"p2p", func() (Lifecycle, error) { return n.buildHost(key) }},
		{"metrics", n.buildMetrics},
		{"chain", n.buildDevnet},
		{"registry", n.buildRegistry},
		{"anchoring", n.buildAnchoring},
		{"relay", n.buildRelay},
		{"backup", n.buildBackup},
		{"api", n.buildAPI},
	}
}

// New builds a node from cfg: it creates the data directory, the node
// identity on first use, opens the database and constructs every service.
// Nothing listens until Start. When a step fails, everything built before
// it is stopped and the database closed.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	return newNode(cfg, log, nil)
}

func newNode(cfg Config, log *slog.Logger, fault func(phase, step string) error) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	key, created, err := p2p.LoadOrCreateIdentity(filepath.Join(cfg.DataDir, IdentityFile))
	if err != nil {
		return nil, err
	}
	if created {
		id, _ := p2p.PeerIDOf(key)
		log.Info("created node identity", "peer_id", id.String(), "file", filepath.Join(cfg.DataDir, IdentityFile))
	}
	db, err := store.Open(store.Options{
		Dir:        filepath.Join(cfg.DataDir, StoreDir),
		SyncWrites: cfg.Store.SyncWrites,
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, db: db, meta: db.Prefix(prefixNode), registry: prometheus.NewRegistry(), fault: fault}
	if n.UncleanShutdown, err = n.meta.Has(keyRunning); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	if n.UncleanShutdown {
		log.Warn("the previous run did not stop cleanly; the store was recovered on open")
	}
	if err := n.build(key); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return n, nil
}

// build runs the steps in order. When one fails it stops, in reverse,
// every service built before it.
func (n *Node) build(key crypto.PrivKey) error {
	for _, s := range n.steps(key) {
		svc, err := n.runStep("build", s.name, s.build)
		if err != nil {
			return errors.Join(fmt.Errorf("build %s: %w", s.name, err), n.stopServices())
		}
		if svc != nil {
			n.services = append(n.services, service{s.name, svc})
		}
	}
	return nil
}

// runStep runs fn unless a test's fault hook fails the step first.
func (n *Node) runStep(phase, name string, fn func() (Lifecycle, error)) (Lifecycle, error) {
	if n.fault != nil {
		if err := n.fault(phase, name); err != nil {
			return nil, err
		}
	}
	return fn()
}

// stopServices stops every built service in reverse start order and
// forgets them; it returns their errors joined.
func (n *Node) stopServices() error {
	var errs []error
	for i := len(n.services) - 1; i >= 0; i-- {
		s := n.services[i]
		if err := s.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
		}
		n.log.Debug("service stopped", "service", s.name)
	}
	n.services = nil
	return errors.Join(errs...)
}

// The build steps: each constructs one service and records it on n.

func (n *Node) buildHost(key crypto.PrivKey) (Lifecycle, error) {
	host, err := p2p.New(n.cfg.P2P, key,
		p2p.WithDatastore(n.db.Prefix(prefixDHT).Datastore()),
		p2p.WithLogger(n.log.With("service", "p2p")),
		p2p.WithUserAgent("volo-node/"+Version),
	)
	if err != nil {
		return nil, err
	}
	n.host = host
	return host, nil
}

func (n *Node) buildMetrics() (Lifecycle, error) { return nil, n.registerMetrics() }

func (n *Node) buildRegistry() (Lifecycle, error) {
	view := n.db.Prefix(prefixRegistry)
	anchors, err := keyregistry.NewStoreQueue(view)
	if err != nil {
		return nil, err
	}
	n.anchors = anchors
	keys, err := keyregistry.New(n.cfg.Registry, keyregistry.NetworkOf(n.host), view, anchors, n.PublicURL,
		keyregistry.WithLogger(n.log.With("service", "registry")), keyregistry.WithMetrics(n.registry))
	if err != nil {
		return nil, err
	}
	n.keys = keys
	return keys, nil
}

func (n *Node) buildRelay() (Lifecycle, error) {
	rel, err := relay.NewService(n.cfg.Relay, n.host, n.db.Prefix(prefixRelay),
		relay.WithLogger(n.log.With("service", "relay")), relay.WithMetrics(n.registry))
	if err != nil {
		return nil, err
	}
	n.relay = rel
	return rel, nil
}

func (n *Node) buildBackup() (Lifecycle, error) {
	bs, err := backupstore.New(n.cfg.Backup, n.host, n.host.DHT(), n.db.Prefix(prefixBackup), backupUsers{n.keys},
		backupstore.WithLogger(n.log.With("service", "backup")), backupstore.WithMetrics(n.registry))
	if err != nil {
		return nil, err
	}
	n.backup = bs
	return bs, nil
}

func (n *Node) buildAPI() (Lifecycle, error) {
	srv, err := api.New(n.cfg.API, n, n.registry, n.registry, n.log.With("service", "api"),
		api.WithRegistry(n.keys), api.WithRelay(n.relay), api.WithBackup(n.backup))
	if err != nil {
		return nil, err
	}
	n.api = srv
	return srv, nil
}

func (n *Node) registerMetrics() error {
	start := float64(time.Now().Unix())
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "volo_node_info",
			Help:        "Always 1; the labels name the node's version and peer ID.",
			ConstLabels: prometheus.Labels{"version": Version, "peer_id": n.host.ID().String()},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_node_start_time_seconds",
			Help: "Unix time at which the node was built.",
		}, func() float64 { return start }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_p2p_peers",
			Help: "Peers the libp2p host is connected to.",
		}, func() float64 { return float64(n.host.Peers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_p2p_routing_table_peers",
			Help: "Peers in the DHT routing table.",
		}, func() float64 { return float64(n.host.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_store_lsm_size_bytes",
			Help: "On-disk size of the database's LSM tree.",
		}, func() float64 { lsm, _ := n.db.Size(); return float64(lsm) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_store_vlog_size_bytes",
			Help: "On-disk size of the database's value log.",
		}, func() float64 { _, vlog := n.db.Size(); return float64(vlog) }),
	}
	for _, c := range cs {
		if err := n.registry.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Start starts the services in order. If one fails, every service is
// stopped in reverse (Stop) and the error names the one that failed.
func (n *Node) Start(ctx context.Context) error {
	if err := n.meta.Put(keyRunning, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, s := range n.services {
		_, err := n.runStep("start", s.name, func() (Lifecycle, error) { return nil, s.svc.Start(ctx) })
		if err != nil {
			return errors.Join(fmt.Errorf("start %s: %w", s.name, err), n.Stop())
		}
		n.log.Debug("service started", "service", s.name)
	}
	n.log.Info("node started", "peer_id", n.host.ID().String(), "api", n.api.URL(), "version", Version)
	n.logAlone()
	n.logChain()
	return nil
}

// Stop stops every service in reverse start order (those built but not
// started too, so that they release what they hold), then closes the
// database. It is safe to call more than once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		if err := n.stopServices(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			if err := n.meta.Delete(keyRunning); err != nil {
				errs = append(errs, fmt.Errorf("store: %w", err))
			}
		}
		if err := n.db.Close(); err != nil {
			errs = append(errs, err)
		}
		n.stopErr = errors.Join(errs...)
		if n.stopErr == nil {
			n.log.Info("node stopped")
		}
	})
	return n.stopErr
}

// Config returns the configuration the node was built from.
func (n *Node) Config() Config { return n.cfg }

// Host returns the node's libp2p host.
func (n *Node) Host() *p2p.Host { return n.host }

// PeerID returns the node's peer ID.
func (n *Node) PeerID() peer.ID { return n.host.ID() }

// Store returns the node's database.
func (n *Node) Store() *store.DB { return n.db }

// APIURL is the base URL of the node's API (valid after Start).
func (n *Node) APIURL() string { return n.api.URL() }

// PublicURL is the base URL clients and browsers reach the API at:
// api.public_url, or the URL the API listens on when that is empty.
func (n *Node) PublicURL() string {
	if n.cfg.API.PublicURL != "" {
		return n.cfg.API.PublicURL
	}
	return n.api.URL()
}

// KeyRegistry returns the node's key registry.
func (n *Node) KeyRegistry() *keyregistry.Service { return n.keys }

// Relay returns the node's relay service.
func (n *Node) Relay() *relay.Service { return n.relay }

// Backup returns the node's backup store.
func (n *Node) Backup() *backupstore.Service { return n.backup }

// Registry is the node's Prometheus registry, served at /metrics.
func (n *Node) Registry() *prometheus.Registry { return n.registry }

// Info implements api.Backend.
func (n *Node) Info() api.NodeInfo {
	addrs := n.host.FullAddrs()
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return api.NodeInfo{
		PeerID:           n.host.ID().String(),
		Addrs:            s,
		Roles:            n.host.Roles(),
		Version:          Version,
		Peers:            n.host.Peers(),
		RoutingTableSize: n.host.RoutingTableSize(),
	}
}

// Health implements api.Backend: the host, the DHT and the store.
func (n *Node) Health() map[string]error {
	checks := n.host.Health()
	checks["store"] = nil
	if n.db.IsClosed() {
		checks["store"] = errors.New("closed")
	}
	return checks
}

// WaitRoutingTable blocks until the DHT routing table holds at least want
// peers or ctx ends, refreshing the table while it waits so that peers that
// joined after this node are found without waiting for the periodic refresh.
func (n *Node) WaitRoutingTable(ctx context.Context, want int) error {
	for n.host.RoutingTableSize() < want {
		rctx, cancel := context.WithTimeout(ctx, routingRefreshWait)
		err := n.host.RefreshRoutingTable(rctx)
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("routing table has %d peers, want %d: %w", n.host.RoutingTableSize(), want, ctx.Err())
		}
		if err != nil {
			// A refresh fails while no peer is reachable yet; try again.
			select {
			case <-ctx.Done():
			case <-time.After(routingRefreshWait / 10):
			}
		}
	}
	return nil
}

// routingRefreshWait bounds one refresh in WaitRoutingTable.
const routingRefreshWait = 2 * time.Second

// logAlone says, at start, what a node without bootstrap peers is: a
// network of one, where every mailbox and backup has this node as its only
// relay and storage node until others join (fewer nodes than the replicas
// setting: the node stores on every one there is).
func (n *Node) logAlone() {
	if len(n.cfg.P2P.Bootstrap) > 0 {
		return
	}
	relays, storage := 0, 0
	if n.cfg.Relay.Enabled {
		relays = 1
	}
	if n.cfg.Backup.Enabled {
		storage = 1
	}
	msg := fmt.Sprintf("no bootstrap peers: this node is a network of one until other nodes join it; "+
		"messages are stored on %d of %d relays, backups on %d of %d storage nodes", relays, relays, storage, storage)
	if relays == 0 || storage == 0 {
		n.log.Warn(msg+" (enable relay and backup, or join a network, to send or back up)",
			"relay.replicas", n.cfg.Relay.Replicas, "backup.replicas", n.cfg.Backup.Replicas)
		return
	}
	n.log.Info(msg, "relay.replicas", n.cfg.Relay.Replicas, "backup.replicas", n.cfg.Backup.Replicas)
}
