// Package backupstore is a node's part in Volo's encrypted backups: chunks
// addressed by CID on the storage nodes closest to them, with per-user
// quotas, replication, repair, garbage collection and backup pointers.
package backupstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Timeouts and sizes of the service's network work.
const (
	// LookupTimeout bounds one closest-peers or providers lookup.
	LookupTimeout = 15 * time.Second
	// PublishTimeout bounds one DHT put of a pointer or one provide.
	PublishTimeout = 30 * time.Second
	// maxProviders bounds the providers a read or a replica count asks.
	maxProviders = 8
	// provideQueue bounds the chunks waiting to be announced; past it
	// they wait for the next republish.
	provideQueue = 1 << 14
	// provideWorkers is the number of concurrent provides.
	provideWorkers = 2
)

// Errors callers branch on.
var (
	// ErrQuotaExceeded reports an upload past the user's quota.
	ErrQuotaExceeded = errors.New("backupstore: quota exceeded")
	// ErrUnauthenticated reports an upload whose authorization does not
	// verify; it wraps wire.ErrUploadAuth or the lookup failure.
	ErrUnauthenticated = errors.New("backupstore: unauthenticated")
	// ErrNotFound reports a chunk or pointer no node has.
	ErrNotFound = errors.New("backupstore: not found")
	// ErrNoStorage reports that no storage node was found for a chunk.
	ErrNoStorage = errors.New("backupstore: no storage nodes")
	// ErrNoQuorum reports a chunk that fewer than the write quorum stored.
	ErrNoQuorum = errors.New("backupstore: write quorum not reached")
	// ErrStalePointer reports a pointer older than the one stored.
	ErrStalePointer = errors.New("backupstore: pointer older than the stored one")
	// ErrNotStorage reports a store request to a node that is not a
	// storage node.
	ErrNotStorage = errors.New("backupstore: this node is not a storage node")
	// ErrStopped reports a call on a stopped service.
	ErrStopped = errors.New("backupstore: service stopped")
	// ErrUnknownUser is what a UserLookup's Devices wraps when no node
	// has the user's chain.
	ErrUnknownUser = errors.New("backupstore: unknown user")
	// ErrChainUnavailable reports that the user's chain could not be
	// looked up, so a pointer could not be checked against it: nothing
	// was stored, and the request may be tried again.
	ErrChainUnavailable = errors.New("backupstore: the user's chain could not be looked up")
)

// UserLookup finds the verified device set of a user's chain; the node
// adapts its key registry to it.
type UserLookup interface {
	// Devices returns the device set of the user's newest chain, from
	// the node's store or the network; an error wrapping ErrUnknownUser
	// when no node has it.
	Devices(ctx context.Context, user ident.UserID) (ident.DeviceSet, error)
	// StoredDevices returns the device set of the chain the node holds
	// for user, with no network lookup; false when it holds none.
	StoredDevices(ctx context.Context, user ident.UserID) (ident.DeviceSet, bool)
}

// Host is what the backup store uses of the node's host; *p2p.Host is one.
type Host interface {
	// ID is this node's peer ID.
	ID() peer.ID
	// Handle serves proto, advertised as role.
	Handle(role string, proto protocol.ID, handler network.StreamHandler) error
	// Libp2p is the libp2p host that opens streams to storage nodes,
	// keeps providers' addresses and drops the handler on Stop.
	Libp2p() host.Host
	// ClosestPeers returns the k peers that speak proto closest to key by
	// XOR distance, closest first.
	ClosestPeers(ctx context.Context, key []byte, k int, proto protocol.ID) ([]peer.ID, error)
	// RoutingTableSize is the number of peers in the DHT routing table.
	RoutingTableSize() int
	// Validators is where the pointer record validator is registered.
	Validators() *p2p.Validators
}

// DHT is what the backup store uses of the DHT: provider records of chunks
// and pointer records; *dht.IpfsDHT is one.
type DHT interface {
	FindProvidersAsync(ctx context.Context, key cid.Cid, count int) <-chan peer.AddrInfo
	Provide(ctx context.Context, key cid.Cid, announce bool) error
	PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error
	GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error)
}

// Option changes how New builds the service.
type Option = service.Option

// WithClock sets the clock of the authorization window and of garbage
// collection (default time.Now).
func WithClock(now func() time.Time) Option { return service.WithClock(now) }

// WithLogger sets the service's logger (default: a logger that discards).
func WithLogger(log *slog.Logger) Option { return service.WithLogger(log) }

// WithMetrics registers the service's metrics on reg (default: the
// metrics are kept but not registered).
func WithMetrics(reg prometheus.Registerer) Option { return service.WithMetrics(reg) }

// Service is a node's backup store: it serves ProtocolID from its chunks
// when enabled, and uploads, downloads and finds chunks and pointers on
// the storage nodes for the node's clients.
type Service struct {
	cfg    Config
	host   Host
	dht    DHT
	client service.Client[reply]
	cs     *chunkStore
	users  UserLookup
	log    *slog.Logger
	now    func() time.Time
	met    *metrics

	provide chan cid.Cid
	// refs caches, per user, what the newest backup references, for the
	// checks of replicate requests.
	refs *refCache

	life *service.Lifecycle
	ctx  context.Context // life's: lives from New until Stop
}

// New builds the backup store over db, its part of the node's store, and
// registers the volo-backup record validator on host. It starts nothing:
// it serves and runs its loops from Start.
func New(cfg Config, host Host, dht DHT, db *store.Prefixed, users UserLookup, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if users == nil {
		return nil, errors.New("backupstore: a user lookup is required to check uploads")
	}
	o := service.Apply(opts)
	s := &Service{
		cfg: cfg, host: host, dht: dht, users: users, log: o.Log, now: o.Now,
		provide: make(chan cid.Cid, provideQueue), life: service.NewLifecycle(), refs: newRefCache(),
	}
	s.ctx = s.life.Context()
	s.client = service.Client[reply]{
		Framing: framing, Opener: host.Libp2p(), Protocol: ProtocolID, Timeout: RequestTimeout,
		MaxReply: MaxHeaderSize, Decode: decodeReply, Refused: remoteError,
	}
	cs := newChunkStore(db, cfg.QuotaBytes, cfg.QuotaChunks)
	met, err := newMetrics(o.Metrics, cs)
	if err != nil {
		return nil, err
	}
	if err := host.Validators().Add(wire.PointerNamespace, PointerValidator{Now: s.now, Chains: users}); err != nil {
		return nil, fmt.Errorf("backupstore: %w", err)
	}
	cs.batched = func(n int) { met.commitBatch.Observe(float64(n)) }
	s.cs, s.met = cs, met
	return s, nil
}

// Start starts the chunk store's committer and the republish loop and,
// when enabled, serves ProtocolID and starts the repair, garbage
// collection and provide loops.
func (s *Service) Start(context.Context) error {
	s.cs.start()
	s.life.Every(s.cfg.RepublishInterval.Std(), func() { s.Republish(s.ctx) })
	if !s.cfg.Enabled {
		return nil
	}
	if err := s.host.Handle(Role, ProtocolID, s.life.Handler(s.handle)); err != nil {
		return fmt.Errorf("backupstore: %w", err)
	}
	for range provideWorkers {
		s.life.Go(s.provideLoop)
	}
	s.life.Every(s.cfg.RepairInterval.Std(), func() {
		if _, err := s.Repair(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("repair chunks", "err", err)
		}
	})
	s.life.Every(s.cfg.GCInterval.Std(), func() {
		if _, err := s.GC(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("collect chunks", "err", err)
		}
	})
	s.log.Info("backup storage serving", "protocol", ProtocolID, "replicas", s.cfg.Replicas, "write_quorum", s.cfg.WriteQuorum,
		"quota_bytes", s.cfg.QuotaBytes, "quota_chunks", s.cfg.QuotaChunks)
	return nil
}

// Stop stops serving and waits for the requests and loops in flight.
func (s *Service) Stop() error {
	if s.cfg.Enabled {
		s.host.Libp2p().RemoveStreamHandler(ProtocolID)
	}
	if !s.life.Stop() {
		return nil
	}
	s.cs.close()
	return nil
}

// PeerID is the node's peer ID: what a device signs an upload to this node for.
func (s *Service) PeerID() peer.ID { return s.host.ID() }

// Config returns the service's configuration.
func (s *Service) Config() Config { return s.cfg }
