package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// AnchorTopic is the gossipsub topic on which nodes announce the anchors
// they published. Each message is one Announcement.
const AnchorTopic = "/volo/anchors/1"

// BatchProtocol is the protocol a node fetches a batch with from the node
// that published it: the client writes the batch's binary CID (36 bytes)
// and closes its side; the server answers with the batch bytes and closes,
// or resets the stream when it has no such batch.
const BatchProtocol = protocol.ID("/volo/anchor/1.0.0")

// Limits of mirroring.
const (
	// AnnouncementVersion is the version of the announcement encoding.
	AnnouncementVersion = 1
	// MaxAnnouncementSize bounds a gossiped announcement.
	MaxAnnouncementSize = 2048
	// BatchFetchTimeout bounds one fetch of a batch from its publisher.
	BatchFetchTimeout = 2 * time.Minute
	// batchRequestTimeout bounds how long a server waits for a request.
	batchRequestTimeout = 10 * time.Second
	// batchSendTimeout bounds how long a server spends sending one batch.
	batchSendTimeout = 2 * time.Minute
	// mirrorQueue bounds the announcements waiting to be mirrored.
	mirrorQueue = 64
	// blockCheckTimeout bounds the check of a mirrored anchor on the chain.
	blockCheckTimeout = 30 * time.Second
)

// ErrBadAnnouncement reports an announcement that does not decode, breaks
// a limit or whose publisher signature does not verify.
var ErrBadAnnouncement = errors.New("keyregistry: bad anchor announcement")

// ErrBatchNotFound reports a batch this node does not hold.
var ErrBatchNotFound = errors.New("keyregistry: batch not found")

// Announcement says that a node's anchor was included on the chain: the
// anchor's metadata as published, the publisher's signature over it, and
// where the transaction is. Deterministic CBOR with integer keys.
type Announcement struct {
	V        uint64   `cbor:"1,keyasint"`
	Metadata []byte   `cbor:"2,keyasint"` // chain.EncodeAnchorMetadata of the anchor
	Sig      []byte   `cbor:"3,keyasint"` // publisher's signature (DomainAnchor)
	TxID     []byte   `cbor:"4,keyasint"`
	Block    BlockRef `cbor:"5,keyasint"`
	Prev     BlockRef `cbor:"6,keyasint"`
	BlockNo  uint64   `cbor:"7,keyasint"`

	anchor chain.Anchor // decoded Metadata, set by DecodeAnnouncement and announce
}

var annDec = wire.StrictDecMode(16)

// Anchor is the anchor the announcement carries.
func (a Announcement) Anchor() chain.Anchor { return a.anchor }

// Encode returns the announcement's canonical encoding.
func (a Announcement) Encode() []byte {
	b, err := recEnc.Marshal(a)
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode announcement: %v", err))
	}
	return b
}

// newAnnouncement is the announcement of inc, signed with sig.
func newAnnouncement(inc chain.Inclusion, sig []byte) (Announcement, error) {
	md, err := chain.EncodeAnchorMetadata(inc.Anchor)
	if err != nil {
		return Announcement{}, err
	}
	return Announcement{V: AnnouncementVersion, Metadata: md, Sig: sig, TxID: bytes.Clone(inc.TxID[:]),
		Block: refOf(inc.Block), Prev: refOf(inc.Prev), BlockNo: inc.BlockNo, anchor: inc.Anchor}, nil
}

// DecodeAnnouncement decodes an announcement and checks it: limits, the
// anchor metadata, a batch CID of the kind Volo writes, and the
// publisher's signature against the peer ID in the metadata.
func DecodeAnnouncement(data []byte) (Announcement, error) {
	if len(data) > MaxAnnouncementSize {
		return Announcement{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadAnnouncement, len(data), MaxAnnouncementSize)
	}
	var a Announcement
	if err := annDec.Unmarshal(data, &a); err != nil {
		return Announcement{}, fmt.Errorf("%w: %v", ErrBadAnnouncement, err)
	}
	if !bytes.Equal(a.Encode(), data) {
		return Announcement{}, fmt.Errorf("%w: not canonical", ErrBadAnnouncement)
	}
	switch {
	case a.V != AnnouncementVersion:
		return Announcement{}, fmt.Errorf("%w: version %d", ErrBadAnnouncement, a.V)
	case len(a.TxID) != 32 || len(a.Block.Hash) != 32 || (len(a.Prev.Hash) != 0 && len(a.Prev.Hash) != 32) || a.BlockNo == 0:
		return Announcement{}, fmt.Errorf("%w: bad transaction ID or block point", ErrBadAnnouncement)
	case len(a.Sig) == 0 || len(a.Sig) > maxSignatureSize:
		return Announcement{}, fmt.Errorf("%w: signature of %d bytes", ErrBadAnnouncement, len(a.Sig))
	}
	an, err := chain.DecodeAnchorMetadata(a.Metadata)
	if err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	if an.TreeSize > MaxBatchLinks {
		return Announcement{}, fmt.Errorf("%w: tree of %d leaves, limit %d", ErrBadAnnouncement, an.TreeSize, MaxBatchLinks)
	}
	if _, err := ParseBatchCID(an.BatchCID); err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	if err := VerifyAnchorSignature(an, a.Sig); err != nil {
		return Announcement{}, fmt.Errorf("%w: %w", ErrBadAnnouncement, err)
	}
	a.anchor = an
	return a, nil
}

// Inclusion is where the announcement says the anchor landed.
func (a Announcement) Inclusion() chain.Inclusion {
	inc := chain.Inclusion{Anchor: a.anchor, Block: a.Block.Point(), Prev: a.Prev.Point(), BlockNo: a.BlockNo}
	copy(inc.TxID[:], a.TxID)
	return inc
}

// proofFor is the anchor proof of leaf i of tree t under announcement a.
func (a Announcement) proofFor(t *Tree, i uint64) (AnchorProof, error) {
	path, err := t.InclusionProof(i)
	if err != nil {
		return AnchorProof{}, err
	}
	return AnchorProof{V: ProofVersion, BatchCID: bytes.Clone(a.anchor.BatchCID), LeafIndex: i, TreeSize: t.Size(),
		Root: bytes.Clone(a.anchor.Root[:]), Path: path, TxID: a.TxID, Block: a.Block, Prev: a.Prev,
		BlockNo: a.BlockNo, Sig: a.Sig}, nil
}

// Store layout of batches and proofs inside the registry's view.
const (
	batchPrefix = "/batch/"
	proofPrefix = "/proof/"
)

func batchKey(c cid.Cid) []byte { return []byte(batchPrefix + c.String()) }

func proofKey(user e2ee.UserID, link e2ee.LinkID) []byte {
	return []byte(proofPrefix + user.String() + "/" + link.String())
}

// storedProof is the value under a proof key: the proof and the peer ID
// of the node that published its anchor.
type storedProof struct {
	Proof []byte `cbor:"1,keyasint"`
	Node  []byte `cbor:"2,keyasint"`
}

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
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	queue  chan Announcement
	reader atomic.Pointer[chain.Reader] // set while an Anchoring service runs
}

// initMirror registers the announcement validator; called by New.
func (s *Service) initMirror() error {
	s.mirror.queue = make(chan Announcement, mirrorQueue)
	if err := s.host.PubSub().RegisterTopicValidator(AnchorTopic, s.validateAnnouncement); err != nil {
		return fmt.Errorf("keyregistry: anchor gossip validator: %w", err)
	}
	return nil
}

// startMirror joins AnchorTopic, serves BatchProtocol and starts mirroring;
// called by Start.
func (s *Service) startMirror() error {
	t, err := s.host.Topic(AnchorTopic)
	if err != nil {
		return fmt.Errorf("keyregistry: %w", err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		return fmt.Errorf("keyregistry: subscribe %s: %w", AnchorTopic, err)
	}
	s.mirror.topic, s.mirror.sub = t, sub
	s.host.Libp2p().SetStreamHandler(BatchProtocol, s.serveBatch)
	s.wg.Go(s.readAnnouncements)
	s.wg.Go(s.mirrorLoop)
	return nil
}

// stopMirror undoes startMirror; the background loops end with s.ctx.
func (s *Service) stopMirror() {
	s.host.Libp2p().RemoveStreamHandler(BatchProtocol)
	if s.mirror.sub != nil {
		s.mirror.sub.Cancel()
	}
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
		if !ok || bytes.Equal(a.anchor.Node, []byte(s.host.ID())) {
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

// mirrorAnchor fetches the announced batch (unless the node has it),
// checks it against the anchor, checks the anchor on the chain when the
// node has a chain reader, and stores the batch and its proofs.
func (s *Service) mirrorAnchor(ctx context.Context, a Announcement) (string, error) {
	c, _ := cid.Cast(a.anchor.BatchCID)
	raw, err := s.Batch(c)
	if errors.Is(err, ErrBatchNotFound) {
		fctx, cancel := context.WithTimeout(ctx, BatchFetchTimeout)
		raw, err = s.FetchBatch(fctx, peer.ID(a.anchor.Node), c, a.anchor.TreeSize)
		cancel()
	}
	if err != nil {
		return "failed", err
	}
	b, t, err := checkBatch(raw, c, a.anchor)
	if err != nil {
		return "refused", err
	}
	checked := false
	if r := s.mirror.reader.Load(); r != nil {
		cctx, cancel := context.WithTimeout(ctx, blockCheckTimeout)
		err := checkAnchorOnChain(cctx, *r, a)
		cancel()
		if err != nil {
			return "refused", err
		}
		checked = true
	}
	n, err := s.storeProofs(raw, b, t, a, checked)
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
func checkBatch(raw []byte, c cid.Cid, a chain.Anchor) (Batch, *Tree, error) {
	if got := BatchCID(raw); !got.Equals(c) {
		return Batch{}, nil, fmt.Errorf("%w: bytes hash to %s, want %s", ErrBadBatch, got, c)
	}
	b, err := DecodeBatch(raw)
	if err != nil {
		return Batch{}, nil, err
	}
	if uint64(len(b.Leaves)) != a.TreeSize {
		return Batch{}, nil, fmt.Errorf("%w: %d leaves, the anchor says %d", ErrBadBatch, len(b.Leaves), a.TreeSize)
	}
	t := TreeOf(b)
	if t.Root() != a.Root {
		return Batch{}, nil, fmt.Errorf("%w: tree root %x, the anchor says %x", ErrBadBatch, t.Root(), a.Root)
	}
	return b, t, nil
}

// checkAnchorOnChain checks that the block a names is on r's chain and
// holds a's transaction with a's anchor.
func checkAnchorOnChain(ctx context.Context, r chain.Reader, a Announcement) error {
	inc := a.Inclusion()
	blk, err := r.Block(ctx, inc.Block, inc.Prev)
	if err != nil {
		return fmt.Errorf("block %s: %w", inc.Block, err)
	}
	for _, tx := range blk.Txs {
		if tx.ID == inc.TxID {
			if tx.Anchor == nil || !anchorsEqual(*tx.Anchor, a.anchor) {
				return fmt.Errorf("transaction %s does not carry the announced anchor", inc.TxID)
			}
			return nil
		}
	}
	return fmt.Errorf("transaction %s is not in block %s", inc.TxID, inc.Block)
}

func anchorsEqual(a, b chain.Anchor) bool {
	x, err1 := chain.EncodeAnchorMetadata(a)
	y, err2 := chain.EncodeAnchorMetadata(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// storeProofs stores batch raw and, for each of its leaves, the proof under
// announcement a. A proof already stored is replaced when the new one is
// for the same batch by the same publisher (a re-anchor after a rollback),
// when replace is set (the anchor was checked on the chain, or it is this
// node's own), or when it was published by this node. It returns the
// number of proofs written.
func (s *Service) storeProofs(raw []byte, b Batch, t *Tree, a Announcement, replace bool) (int, error) {
	c, _ := cid.Cast(a.anchor.BatchCID)
	ctx := context.Background()
	wb, _ := s.d.Batch(ctx) // a badger write batch: split as large batches need, and idempotent
	if err := wb.Put(ctx, ds.NewKey(string(batchKey(c))), raw); err != nil {
		return 0, fmt.Errorf("keyregistry: store batch: %w", err)
	}
	n := 0
	for i, leaf := range b.Leaves {
		user, err := e2ee.UserIDFromBytes(leaf.User)
		if err != nil {
			continue // DecodeBatch checked it
		}
		link, err := e2ee.DecodeLink(leaf.Link)
		if err != nil {
			s.log.Debug("batch holds a link that does not decode; no proof stored for it", "batch", c.String(), "leaf", i, "err", err)
			continue
		}
		key := proofKey(user, link.ID())
		if old, err := s.db.Get(key); err == nil && !replace {
			var sp storedProof
			if recDec.Unmarshal(old, &sp) == nil {
				op, err := DecodeAnchorProof(sp.Proof)
				same := err == nil && bytes.Equal(op.BatchCID, a.anchor.BatchCID) && bytes.Equal(sp.Node, a.anchor.Node)
				if !same {
					continue
				}
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return n, fmt.Errorf("keyregistry: read proof: %w", err)
		}
		p, err := a.proofFor(t, uint64(i))
		if err != nil {
			return n, err
		}
		v, err := recEnc.Marshal(storedProof{Proof: p.Encode(), Node: a.anchor.Node})
		if err != nil {
			return n, err
		}
		if err := wb.Put(ctx, ds.NewKey(string(key)), v); err != nil {
			return n, fmt.Errorf("keyregistry: store proof: %w", err)
		}
		n++
	}
	if err := wb.Commit(ctx); err != nil {
		return 0, fmt.Errorf("keyregistry: store proofs: %w", err)
	}
	s.am.lastBlock.Set(float64(a.BlockNo))
	return n, nil
}

// Batch returns the stored batch c (its encoding), or ErrBatchNotFound.
func (s *Service) Batch(c cid.Cid) ([]byte, error) {
	v, err := s.db.Get(batchKey(c))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrBatchNotFound, c)
	}
	if err != nil {
		return nil, fmt.Errorf("keyregistry: read batch: %w", err)
	}
	return v, nil
}

// Proofs returns the stored anchor proof (its encoding) of each link of
// user's chain, nil for the links that have none yet.
func (s *Service) Proofs(user e2ee.UserID, links [][]byte) ([][]byte, error) {
	out := make([][]byte, len(links))
	for i, enc := range links {
		l, err := e2ee.DecodeLink(enc)
		if err != nil {
			return nil, fmt.Errorf("keyregistry: link %d: %w", i, err)
		}
		v, err := s.db.Get(proofKey(user, l.ID()))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keyregistry: read proof: %w", err)
		}
		var sp storedProof
		if err := recDec.Unmarshal(v, &sp); err != nil {
			return nil, fmt.Errorf("keyregistry: stored proof of link %d: %w", i, err)
		}
		out[i] = sp.Proof
	}
	return out, nil
}

// serveBatch answers one BatchProtocol request.
func (s *Service) serveBatch(st network.Stream) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(batchRequestTimeout))
	req, err := io.ReadAll(io.LimitReader(st, 37))
	if err != nil || len(req) != 36 {
		st.Reset()
		return
	}
	c, err := ParseBatchCID(req)
	if err != nil {
		st.Reset()
		return
	}
	raw, err := s.Batch(c)
	if err != nil {
		st.Reset()
		return
	}
	_ = st.SetWriteDeadline(time.Now().Add(batchSendTimeout))
	if _, err := st.Write(raw); err != nil {
		st.Reset()
	}
}

// FetchBatch asks node p for batch c of size leaves over BatchProtocol
// and returns its bytes; the caller checks them (checkBatch).
func (s *Service) FetchBatch(ctx context.Context, p peer.ID, c cid.Cid, size uint64) ([]byte, error) {
	st, err := s.host.Libp2p().NewStream(network.WithAllowLimitedConn(ctx, "anchor batch"), p, BatchProtocol)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if _, err := st.Write(c.Bytes()); err != nil {
		st.Reset()
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	limit := int64(min(uint64(MaxBatchSize), 16+size*maxLeafSize))
	raw, err := io.ReadAll(io.LimitReader(st, limit+1))
	if err != nil {
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	if int64(len(raw)) > limit {
		st.Reset()
		return nil, fmt.Errorf("%w: %s from %s is over %d bytes", ErrBadBatch, c, p, limit)
	}
	return raw, nil
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
