package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// Limits of mirroring.
const (
	// mirrorQueue bounds the announcements waiting to be mirrored.
	mirrorQueue = 64
	// blockCheckTimeout bounds the check of a mirrored anchor on the chain.
	blockCheckTimeout = 30 * time.Second
	// MirrorBudgetWindow is the window of registry.mirror_bytes_per_publisher:
	// a publisher's budget refills fully over this time.
	MirrorBudgetWindow = 24 * time.Hour
	// maxBudgetPublishers bounds the publishers whose spent budget the node
	// remembers; a publisher whose budget refilled is forgotten first.
	maxBudgetPublishers = 4096
)

// Why a node refuses to mirror an announced anchor.
var (
	// ErrUncheckedAnchor: the node has no chain reader to check the anchor
	// with, and its publisher is not in registry.trusted_anchor_publishers.
	ErrUncheckedAnchor = errors.New("keyregistry: anchor not checked: no chain reader, and the publisher is not trusted")
	// ErrAnchorNotOnChain: the named block does not hold the announced
	// anchor transaction.
	ErrAnchorNotOnChain = errors.New("keyregistry: anchor not on the chain")
	// ErrMirrorBudget: the publisher's batch bytes of the current window
	// (registry.mirror_bytes_per_publisher) are spent.
	ErrMirrorBudget = errors.New("keyregistry: the publisher's mirroring budget is spent")
)

type anchorMetrics struct {
	batches   prometheus.Counter
	links     prometheus.Counter
	reanchors prometheus.Counter
	errors    *prometheus.CounterVec
	lastBlock prometheus.Gauge
	mirrored  *prometheus.CounterVec
}

func newAnchorMetrics() anchorMetrics {
	return anchorMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_anchor_batches_total", Help: "Batches this node anchored (each one transaction), re-anchors included."}),
		links: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_anchor_links_total", Help: "Links in the batches this node anchored."}),
		reanchors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_registry_anchor_reanchors_total", Help: "Batches anchored again because the block of their anchor was rolled back."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_registry_anchor_errors_total", Help: "Anchoring failures, by stage (anchor, store, watch)."}, []string{"stage"}),
		lastBlock: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "volo_registry_anchor_last_block", Help: "Block number of the newest anchor this node published or mirrored."}),
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_registry_anchor_mirrored_total", Help: "Anchor announcements of other nodes, by outcome (stored, known, refused, failed)."}, []string{"outcome"}),
	}
}

func (m anchorMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.batches, m.links, m.reanchors, m.errors, m.lastBlock, m.mirrored}
}

// mirror is the part of the registry that keeps batches and anchor proofs:
// its own (written by Anchoring) and other nodes' (announced on
// AnchorTopic, fetched with BatchProtocol).
type mirror struct {
	topic   *pubsub.Topic
	sub     *pubsub.Subscription
	queue   chan Announcement
	reader  atomic.Pointer[chain.Reader] // set while an Anchoring service runs
	trusted map[peer.ID]bool             // registry.trusted_anchor_publishers
	budget  *publisherBudget
}

// publisherBudget is a token bucket of batch bytes per publisher: perWindow
// bytes, refilled over MirrorBudgetWindow.
type publisherBudget struct {
	perWindow int64
	mu        sync.Mutex
	lims      map[peer.ID]*rate.Limiter
}

func newPublisherBudget(perWindow int64) *publisherBudget {
	return &publisherBudget{perWindow: perWindow, lims: make(map[peer.ID]*rate.Limiter)}
}

// reserve reports whether p's budget holds at least want bytes (the most
// the caller may use); spend then charges what was used, at most want.
func (b *publisherBudget) reserve(p peer.ID, want int64) (spend func(n int64), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.lims[p]
	if l == nil {
		if len(b.lims) >= maxBudgetPublishers {
			b.forgetRefilled()
		}
		if len(b.lims) >= maxBudgetPublishers {
			return nil, false
		}
		l = rate.NewLimiter(rate.Limit(float64(b.perWindow)/MirrorBudgetWindow.Seconds()), int(b.perWindow))
		b.lims[p] = l
	}
	if want > b.perWindow || l.Tokens() < float64(want) {
		return nil, false
	}
	return func(n int64) {
		b.mu.Lock()
		defer b.mu.Unlock()
		l.ReserveN(time.Now(), int(min(n, want)))
	}, true
}

// forgetRefilled drops the publishers whose budget is full again: they are
// no different from publishers never seen.
func (b *publisherBudget) forgetRefilled() {
	for p, l := range b.lims {
		if l.Tokens() >= float64(b.perWindow) {
			delete(b.lims, p)
		}
	}
}

// startMirror registers the announcement validator, joins AnchorTopic and
// serves BatchProtocol; called by Start, which starts the mirroring loops.
// On an error it undoes what it did.
func (s *Service) startMirror() error {
	s.mirror.trusted = make(map[peer.ID]bool, len(s.cfg.TrustedAnchorPublishers))
	for _, id := range s.cfg.TrustedAnchorPublishers {
		p, _ := peer.Decode(id) // Config.Validate checked it
		s.mirror.trusted[p] = true
	}
	s.mirror.budget = newPublisherBudget(s.cfg.MirrorBytesPerPublisher)
	if err := s.net.PubSub.RegisterTopicValidator(AnchorTopic, s.validateAnnouncement); err != nil {
		return fmt.Errorf("keyregistry: anchor gossip validator: %w", err)
	}
	t, err := s.net.PubSub.Topic(AnchorTopic)
	if err == nil {
		s.mirror.sub, err = t.Subscribe()
		if err != nil {
			err = fmt.Errorf("keyregistry: subscribe %s: %w", AnchorTopic, err)
		}
	} else {
		err = fmt.Errorf("keyregistry: %w", err)
	}
	if err != nil {
		_ = s.net.PubSub.UnregisterTopicValidator(AnchorTopic)
		return err
	}
	s.mirror.topic = t
	s.net.Host.SetStreamHandler(BatchProtocol, s.serveBatch)
	return nil
}

// stopMirror undoes startMirror; the background loops end with s.ctx.
func (s *Service) stopMirror() {
	s.net.Host.RemoveStreamHandler(BatchProtocol)
	if s.mirror.sub != nil {
		s.mirror.sub.Cancel()
	}
	_ = s.net.PubSub.UnregisterTopicValidator(AnchorTopic)
}

func (s *Service) validateAnnouncement(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	a, err := DecodeAnnouncement(msg.GetData())
	if err != nil {
		s.am.mirrored.WithLabelValues("refused").Inc()
		s.log.Debug("refused an anchor announcement", "from", msg.GetFrom().String(), "err", err)
		return pubsub.ValidationReject
	}
	msg.ValidatorData = a
	return pubsub.ValidationAccept
}

func (s *Service) readAnnouncements() {
	for {
		msg, err := s.mirror.sub.Next(s.ctx)
		if err != nil {
			return
		}
		a, ok := msg.ValidatorData.(Announcement)
		if !ok || bytes.Equal(a.anchor.Node, []byte(s.net.Host.ID())) {
			continue
		}
		select {
		case s.mirror.queue <- a:
		default:
			s.am.mirrored.WithLabelValues("failed").Inc()
			s.log.Warn("anchor mirroring is behind; dropped an announcement", "batch", a.Anchor().BatchCID)
		}
	}
}

func (s *Service) mirrorLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case a := <-s.mirror.queue:
			outcome, err := s.mirrorAnchor(s.ctx, a)
			s.am.mirrored.WithLabelValues(outcome).Inc()
			c, _ := cid.Cast(a.anchor.BatchCID)
			if err != nil {
				s.log.Warn("could not mirror an anchor", "batch", c.String(), "publisher", peer.ID(a.anchor.Node).String(), "err", err)
				continue
			}
			s.log.Debug("mirrored an anchor", "batch", c.String(), "outcome", outcome, "block", a.BlockNo)
		}
	}
}

// mirrorAnchor mirrors announcement a when it can vouch for it: with a
// chain reader, the named block must hold the announced anchor; without
// one, the publisher must be trusted (registry.trusted_anchor_publishers).
// Only then, and within the publisher's budget, it fetches the batch from
// the publisher (unless the node has it), checks it against the anchor,
// and stores the batch and its proofs.
func (s *Service) mirrorAnchor(ctx context.Context, a Announcement) (string, error) {
	c, _ := cid.Cast(a.anchor.BatchCID)
	pub := peer.ID(a.anchor.Node)
	source := proofTrusted
	if r := s.mirror.reader.Load(); r != nil {
		cctx, cancel := context.WithTimeout(ctx, blockCheckTimeout)
		err := checkAnchorOnChain(cctx, *r, a)
		cancel()
		if err != nil {
			return "refused", err
		}
		source = proofChecked
	} else if !s.mirror.trusted[pub] {
		return "refused", fmt.Errorf("%w: publisher %s", ErrUncheckedAnchor, pub)
	}
	raw, err := s.Batch(c)
	if errors.Is(err, ErrBatchNotFound) {
		limit := batchFetchLimit(a.anchor.TreeSize)
		spend, ok := s.mirror.budget.reserve(pub, limit)
		if !ok {
			return "refused", fmt.Errorf("%w: publisher %s, batch %s of up to %d bytes", ErrMirrorBudget, pub, c, limit)
		}
		fctx, cancel := context.WithTimeout(ctx, BatchFetchTimeout)
		raw, err = s.FetchBatch(fctx, pub, c, a.anchor.TreeSize)
		cancel()
		spend(int64(len(raw)))
	}
	if err != nil {
		return "failed", err
	}
	b, t, err := checkBatch(raw, c, a.anchor)
	if err != nil {
		return "refused", err
	}
	n, err := s.storeProofs(raw, b, t, a, source)
	if err != nil {
		return "failed", err
	}
	if n == 0 {
		return "known", nil
	}
	return "stored", nil
}

// checkBatch decodes raw and checks that it is the batch c whose tree is
// the one anchor a commits to.
func checkBatch(raw []byte, c cid.Cid, a chain.Anchor) (anchorproof.Batch, *anchorproof.Tree, error) {
	if got := anchorproof.BatchCID(raw); !got.Equals(c) {
		return anchorproof.Batch{}, nil, fmt.Errorf("%w: bytes hash to %s, want %s", anchorproof.ErrBadBatch, got, c)
	}
	b, err := anchorproof.DecodeBatch(raw)
	if err != nil {
		return anchorproof.Batch{}, nil, err
	}
	if uint64(len(b.Leaves)) != a.TreeSize {
		return anchorproof.Batch{}, nil, fmt.Errorf("%w: %d leaves, the anchor says %d", anchorproof.ErrBadBatch, len(b.Leaves), a.TreeSize)
	}
	t := anchorproof.TreeOf(b)
	if t.Root() != a.Root {
		return anchorproof.Batch{}, nil, fmt.Errorf("%w: tree root %x, the anchor says %x", anchorproof.ErrBadBatch, t.Root(), a.Root)
	}
	return b, t, nil
}

// checkAnchorOnChain checks that the block a names is on r's chain and
// holds a's transaction with a's anchor.
func checkAnchorOnChain(ctx context.Context, r chain.Reader, a Announcement) error {
	inc := a.Inclusion()
	blk, err := r.Block(ctx, inc.Block, inc.Prev)
	if err != nil {
		return fmt.Errorf("%w: block %s: %w", ErrAnchorNotOnChain, inc.Block, err)
	}
	for _, tx := range blk.Txs {
		if tx.ID == inc.TxID {
			if tx.Anchor == nil || !anchorsEqual(*tx.Anchor, a.anchor) {
				return fmt.Errorf("%w: transaction %s does not carry the announced anchor", ErrAnchorNotOnChain, inc.TxID)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: transaction %s is not in block %s", ErrAnchorNotOnChain, inc.TxID, inc.Block)
}

func anchorsEqual(a, b chain.Anchor) bool {
	x, err1 := chain.EncodeAnchorMetadata(a)
	y, err2 := chain.EncodeAnchorMetadata(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// announce publishes a on AnchorTopic.
func (s *Service) announce(ctx context.Context, a Announcement) {
	if s.mirror.topic == nil {
		return
	}
	if err := s.mirror.topic.Publish(ctx, a.Encode()); err != nil {
		s.log.Warn("gossip of an anchor failed", "err", err)
	}
}
