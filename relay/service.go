package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Envelope and EnvelopeID are the wire types the relay carries.
type (
	Envelope   = wire.Envelope
	EnvelopeID = wire.EnvelopeID
)

// Host is what the relay uses of the node's host; *p2p.Host is one.
type Host interface {
	// ID is this node's peer ID.
	ID() peer.ID
	// Handle serves proto, advertised as role.
	Handle(role string, proto protocol.ID, handler network.StreamHandler) error
	// Libp2p is the libp2p host that opens streams to relays and drops
	// the handler on Stop.
	Libp2p() host.Host
	// ClosestPeers returns the k peers that speak proto closest to key by
	// XOR distance, closest first.
	ClosestPeers(ctx context.Context, key []byte, k int, proto protocol.ID) ([]peer.ID, error)
}

// SendResult is the fate of one envelope of a Send.
type SendResult struct {
	// Stored is the number of relays that have the envelope on disk.
	Stored int
	// Relays is the number of relays of the envelope's mailbox: the
	// relay.replicas relay nodes closest to it, or every relay node there
	// is when the network has fewer. The write quorum is at most this.
	Relays int
	// Err is nil once WriteQuorum relays have it; else wire.ErrMailboxFull,
	// wire.ErrRequestsFull,
	// wire.ErrExpired, wire.ErrFromFuture, wire.ErrBadEnvelope or ErrNoQuorum.
	Err error
}

// Option changes how NewService builds the service.
type Option = service.Option

// WithClock sets the clock the mailboxes and the expiry loop read (default time.Now).
func WithClock(now func() time.Time) Option { return service.WithClock(now) }

// WithLogger sets the service's logger (default: a logger that discards).
func WithLogger(log *slog.Logger) Option { return service.WithLogger(log) }

// WithMetrics registers the service's metrics on reg (default: the
// metrics are kept but not registered).
func WithMetrics(reg prometheus.Registerer) Option { return service.WithMetrics(reg) }

// Service is a node's relay: it serves ProtocolID from its mailboxes when
// enabled, and places, fetches and acknowledges envelopes on the relays of
// any device for the node's clients.
type Service struct {
	cfg    Config
	host   Host
	client service.Client[reply]
	box    *Mailboxes
	log    *slog.Logger
	now    func() time.Time
	met    *metrics

	life *service.Lifecycle
	ctx  context.Context // life's: lives from NewService until Stop

	mu           sync.Mutex
	place        map[string]placement
	limiters     map[peer.ID]*rate.Limiter // per source peer of stores
	queues       map[peer.ID]*sendQueue
	queuesClosed bool
}

// NewService builds the relay over view, the relay's part of the node's
// store. It starts nothing: it serves and runs its loops from Start.
func NewService(cfg Config, host Host, view *store.Prefixed, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := service.Apply(opts)
	s := &Service{
		cfg: cfg, host: host, log: o.Log, now: o.Now, life: service.NewLifecycle(),
		place: make(map[string]placement), queues: make(map[peer.ID]*sendQueue),
		limiters: make(map[peer.ID]*rate.Limiter),
	}
	s.ctx = s.life.Context()
	s.client = service.Client[reply]{
		Framing: framing, Opener: host.Libp2p(), Protocol: ProtocolID, Timeout: RequestTimeout,
		MaxReply: MaxFrameSize, Decode: decodeReply, Refused: refused,
	}
	s.box = NewMailboxes(view, cfg.MailboxCap, s.now)
	s.box.maxTTL = cfg.MaxTTL.Std()
	s.box.requestsCap = cfg.RequestsCap
	met, err := newMetrics(o.Metrics, s.box)
	if err != nil {
		return nil, err
	}
	s.met = met
	return s, nil
}

// Start starts the mailboxes' committer and, when the relay is enabled,
// serves ProtocolID and starts the expiry and rebalance loops.
func (s *Service) Start(ctx context.Context) error {
	s.box.Start()
	if !s.cfg.Enabled {
		return nil
	}
	if err := s.host.Handle(Role, ProtocolID, s.life.Handler(s.handle)); err != nil {
		return err
	}
	s.life.Every(s.cfg.ExpireInterval.Std(), s.expire)
	s.life.Every(s.cfg.RebalanceInterval.Std(), func() {
		if err := s.Rebalance(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("rebalance mailboxes", "err", err)
		}
	})
	s.log.Info("relay serving", "protocol", ProtocolID, "replicas", s.cfg.Replicas, "write_quorum", s.cfg.WriteQuorum)
	return nil
}

// Stop stops serving, answers the queued sends, ends subscriptions, waits
// for the requests in flight and closes the mailboxes.
func (s *Service) Stop() error {
	if s.cfg.Enabled {
		s.host.Libp2p().RemoveStreamHandler(ProtocolID)
	}
	s.closeQueues()
	if !s.life.Stop() {
		return nil
	}
	s.box.Close()
	return nil
}

// maxLimiters bounds the source peers whose store rate the relay tracks;
// past it the tracking starts again empty.
const maxLimiters = 1 << 14

// allowStore reports whether peer p may store n more envelopes now.
func (s *Service) allowStore(p peer.ID, n int) bool {
	s.mu.Lock()
	l, ok := s.limiters[p]
	if !ok {
		if len(s.limiters) >= maxLimiters {
			clear(s.limiters)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.StoreRate), s.cfg.StoreBurst)
		s.limiters[p] = l
	}
	s.mu.Unlock()
	return l.AllowN(s.now(), n)
}

// expire deletes the envelopes whose TTL has passed.
func (s *Service) expire() {
	n, err := s.box.Expire(s.now())
	s.met.expired.Add(float64(n))
	if err != nil {
		s.log.Warn("expire envelopes", "err", err)
	} else if n > 0 {
		s.log.Debug("expired envelopes", "count", n)
	}
}

// Local is this node's own mailboxes.
func (s *Service) Local() *Mailboxes { return s.box }
