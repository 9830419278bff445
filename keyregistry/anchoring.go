package keyregistry

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/store"
)

// Timing of the anchoring service.
const (
	// AnchorRetryDelay is how long the service waits after a failed anchor
	// before it tries again.
	AnchorRetryDelay = 30 * time.Second
	// WatchTimeout bounds one check of the watched anchors.
	WatchTimeout = time.Minute
)

// Store layout of the anchoring service inside the registry's view.
var (
	keyAnchorSeq     = []byte("/anchor-seq")     // this node's last anchor Seq (8 bytes)
	keyAnchorPending = []byte("/anchor-pending") // the batch being anchored (pendingBatch)
)

const watchPrefix = "/anchor-watch/" // + batch CID: Announcement of an anchor not yet settled

func watchKey(c cid.Cid) []byte { return []byte(watchPrefix + c.String()) }

// pendingBatch is the batch being anchored. It is written, with the batch
// itself, before the anchor is submitted, so that a node that stops at
// any point anchors the same batch again after a restart rather than a
// new one, and never acks queue entries whose proofs are not stored.
type pendingBatch struct {
	CID       []byte `cbor:"1,keyasint"`
	LastQueue uint64 `cbor:"2,keyasint"`           // queue entries up to this seq are in the batch
	Seq       uint64 `cbor:"3,keyasint"`           // the anchor's Seq
	Announced []byte `cbor:"4,keyasint,omitempty"` // the Announcement once included
}

// AnchoringConfig is what an Anchoring service runs with.
type AnchoringConfig struct {
	// BatchInterval is how often the queued links are anchored.
	BatchInterval time.Duration
	// BatchMaxLinks starts a batch early once this many links wait, and
	// bounds a batch.
	BatchMaxLinks int
	// Depth is the confirmation depth an anchor must reach before its
	// proofs are stored.
	Depth uint64
}

// Anchoring is the service that anchors the links a node accepts: every
// BatchInterval, or as soon as BatchMaxLinks links wait, it takes the
// queue's front into a batch, stores the batch under its CID, publishes
// one anchor of the batch's Merkle root with a chain.Anchorer, signs the
// included anchor with the node's peer key, stores each link's proof,
// acks the queue, and announces the anchor on AnchorTopic. It watches
// its recent anchors with a chain.Reader and anchors a batch again when
// the block of its anchor is rolled back.
type Anchoring struct {
	cfg      AnchoringConfig
	reg      *Service
	q        *StoreQueue
	anchorer chain.Anchorer
	dial     func(context.Context) (chain.Reader, error)
	key      crypto.PrivKey
	log      *slog.Logger

	reader chain.Reader
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewAnchoring builds the anchoring service of reg. dial opens the
// chain.Reader the service watches its anchors with (and that reg checks
// mirrored anchors with) when it starts. Its metric of waiting links goes
// to promReg.
func NewAnchoring(cfg AnchoringConfig, reg *Service, q *StoreQueue, anchorer chain.Anchorer,
	dial func(context.Context) (chain.Reader, error), log *slog.Logger, promReg prometheus.Registerer) (*Anchoring, error) {
	if cfg.BatchInterval <= 0 || cfg.BatchMaxLinks < 1 || cfg.BatchMaxLinks > anchorproof.MaxBatchLinks || cfg.Depth < 1 {
		return nil, fmt.Errorf("keyregistry: anchoring: bad configuration %+v", cfg)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := reg.net.Key
	if key == nil {
		return nil, errors.New("keyregistry: anchoring: no peer key to sign anchors with (Network.Key)")
	}
	a := &Anchoring{cfg: cfg, reg: reg, q: q, anchorer: anchorer, dial: dial, key: key, log: log}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "volo_registry_anchor_pending_links", Help: "Accepted links waiting to be anchored."},
		func() float64 { n, _ := q.Len(); return float64(n) })
	if err := promReg.Register(pending); err != nil {
		return nil, fmt.Errorf("keyregistry: register metrics: %w", err)
	}
	return a, nil
}

// Start dials the chain reader and starts the anchoring loop.
func (a *Anchoring) Start(ctx context.Context) error {
	r, err := a.dial(ctx)
	if err != nil {
		return fmt.Errorf("keyregistry: anchoring: chain reader: %w", err)
	}
	a.reader = r
	a.reg.mirror.reader.Store(&a.reader)
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.wg.Go(a.loop)
	a.log.Info("anchoring registrations", "batch_interval", a.cfg.BatchInterval, "batch_max_links", a.cfg.BatchMaxLinks, "depth", a.cfg.Depth)
	return nil
}

// Stop ends the loop (an anchor in progress is abandoned and taken up
// again at the next start) and closes the reader.
func (a *Anchoring) Stop() error {
	var err error
	a.once.Do(func() {
		if a.cancel == nil {
			return
		}
		a.cancel()
		a.wg.Wait()
		a.reg.mirror.reader.Store(nil)
		err = a.reader.Close()
	})
	return err
}

// AnchorPending anchors the queued links, one batch after another, until
// the queue is empty. A batch left pending by an earlier run is finished
// first.
func (a *Anchoring) AnchorPending(ctx context.Context) error {
	for {
		p, err := a.pending()
		if err != nil {
			return err
		}
		if p == nil {
			if p, err = a.newBatch(); err != nil || p == nil {
				return err
			}
		}
		if err := a.finish(ctx, p); err != nil {
			return err
		}
	}
}

func (a *Anchoring) pending() (*pendingBatch, error) {
	v, err := a.reg.db.Get(keyAnchorPending)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyregistry: anchoring: %w", err)
	}
	var p pendingBatch
	if err := recDec.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("keyregistry: anchoring: pending batch: %w", err)
	}
	return &p, nil
}

// nextSeq reads this node's anchor counter inside txn and advances it.
func (a *Anchoring) nextSeq(txn *badger.Txn) (uint64, error) {
	var seq uint64
	it, err := txn.Get(a.reg.db.Key(keyAnchorSeq))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return 0, err
	default:
		if err := it.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("bad anchor counter (%d bytes)", len(v))
			}
			seq = binary.BigEndian.Uint64(v)
			return nil
		}); err != nil {
			return 0, err
		}
	}
	seq++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return seq, txn.Set(a.reg.db.Key(keyAnchorSeq), b[:])
}

// newBatch takes the queue's front into a batch and stores it, with the
// pending record, in one transaction. It returns nil when the queue is
// empty.
func (a *Anchoring) newBatch() (*pendingBatch, error) {
	entries, err := a.q.Next(a.cfg.BatchMaxLinks)
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	b := anchorproof.Batch{Leaves: make([]anchorproof.Leaf, len(entries))}
	for i, e := range entries {
		b.Leaves[i] = anchorproof.NewLeaf(e.User, e.Link)
	}
	raw := b.Encode()
	c := anchorproof.BatchCID(raw)
	p := &pendingBatch{CID: c.Bytes(), LastQueue: entries[len(entries)-1].Seq}
	err = a.reg.db.Update(func(txn *badger.Txn) error {
		seq, err := a.nextSeq(txn)
		if err != nil {
			return err
		}
		p.Seq = seq
		v, err := recEnc.Marshal(p)
		if err != nil {
			return err
		}
		return errors.Join(txn.Set(a.reg.db.Key(batchKey(c)), raw), txn.Set(a.reg.db.Key(keyAnchorPending), v))
	})
	if err != nil {
		return nil, fmt.Errorf("keyregistry: anchoring: store batch %s: %w", c, err)
	}
	a.log.Info("batch made", "batch", c.String(), "links", len(entries), "seq", p.Seq)
	return p, nil
}

// finish anchors pending batch p (unless it already was), stores the
// proofs of its links, then acks the queue and records the anchor for the
// rollback watch in one transaction.
func (a *Anchoring) finish(ctx context.Context, p *pendingBatch) error {
	c, err := anchorproof.ParseBatchCID(p.CID)
	if err != nil {
		return err
	}
	raw, err := a.reg.Batch(c)
	if err != nil {
		return err
	}
	b, err := anchorproof.DecodeBatch(raw)
	if err != nil {
		return fmt.Errorf("keyregistry: anchoring: stored batch %s: %w", c, err)
	}
	t := anchorproof.TreeOf(b)
	var ann Announcement
	if p.Announced == nil {
		if ann, err = a.publish(ctx, c, t, p.Seq); err != nil {
			return err
		}
		p.Announced = ann.Encode()
		v, err := recEnc.Marshal(p)
		if err != nil {
			return err
		}
		if err := a.reg.db.Put(keyAnchorPending, v); err != nil {
			a.reg.am.errors.WithLabelValues("store").Inc()
			return fmt.Errorf("keyregistry: anchoring: %w", err)
		}
	} else if ann, err = DecodeAnnouncement(p.Announced); err != nil {
		return fmt.Errorf("keyregistry: anchoring: pending announcement: %w", err)
	}
	if _, err := a.reg.storeProofs(raw, b, t, ann, proofOwn); err != nil {
		a.reg.am.errors.WithLabelValues("store").Inc()
		return err
	}
	err = a.reg.db.Update(func(txn *badger.Txn) error {
		return errors.Join(a.q.AckTxn(txn, p.LastQueue),
			txn.Set(a.reg.db.Key(watchKey(c)), p.Announced),
			txn.Delete(a.reg.db.Key(keyAnchorPending)))
	})
	if err != nil {
		a.reg.am.errors.WithLabelValues("store").Inc()
		return fmt.Errorf("keyregistry: anchoring: ack batch %s: %w", c, err)
	}
	a.q.Recount()
	a.reg.am.batches.Inc()
	a.reg.am.links.Add(float64(len(b.Leaves)))
	a.reg.announce(ctx, ann)
	a.log.Info("batch anchored", "batch", c.String(), "links", len(b.Leaves), "tx", ann.Inclusion().TxID.String(),
		"block", ann.BlockNo, "slot", ann.Block.Slot)
	return nil
}

// publish anchors the root of tree t of batch c as anchor number seq,
// waits for the configured depth and returns the signed announcement.
func (a *Anchoring) publish(ctx context.Context, c cid.Cid, t *anchorproof.Tree, seq uint64) (Announcement, error) {
	an := chain.Anchor{Version: chain.AnchorVersion, Root: t.Root(), TreeSize: t.Size(), Seq: seq,
		BatchCID: c.Bytes(), Node: []byte(a.reg.net.Host.ID())}
	inc, err := a.anchorer.Anchor(ctx, an, a.cfg.Depth)
	if err != nil {
		a.reg.am.errors.WithLabelValues("anchor").Inc()
		return Announcement{}, fmt.Errorf("keyregistry: anchor batch %s: %w", c, err)
	}
	if inc.Anchor.Root != an.Root || !bytes.Equal(inc.Anchor.BatchCID, an.BatchCID) {
		return Announcement{}, fmt.Errorf("keyregistry: anchor batch %s: the anchorer published another anchor", c)
	}
	sig, err := anchorproof.SignAnchor(a.key, inc.Anchor)
	if err != nil {
		return Announcement{}, err
	}
	return newAnnouncement(inc, sig)
}

// Watch checks the anchors this node published that are not yet settled
// (less than twice the confirmation depth deep): one whose block is no
// longer on the chain is anchored again (a new Seq and transaction, the
// same batch), its proofs replaced and the new anchor announced. Settled
// anchors leave the watch.
func (a *Anchoring) Watch(ctx context.Context) error {
	var watched [][]byte
	err := a.reg.db.Iterate([]byte(watchPrefix), false, func(_, v []byte) error {
		watched = append(watched, bytes.Clone(v))
		return nil
	})
	if err != nil || len(watched) == 0 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, WatchTimeout)
	tip, err := a.reader.Tip(wctx)
	cancel()
	if err != nil {
		a.reg.am.errors.WithLabelValues("watch").Inc()
		return fmt.Errorf("keyregistry: anchoring: chain tip: %w", err)
	}
	for _, v := range watched {
		ann, err := DecodeAnnouncement(v)
		if err != nil {
			return fmt.Errorf("keyregistry: anchoring: watched anchor: %w", err)
		}
		c, _ := cid.Cast(ann.anchor.BatchCID)
		inc := ann.Inclusion()
		wctx, cancel := context.WithTimeout(ctx, WatchTimeout)
		_, err = a.reader.Block(wctx, inc.Block, inc.Prev)
		cancel()
		switch {
		case errors.Is(err, chain.ErrNotFound):
			a.log.Warn("the block of an anchor was rolled back; anchoring the batch again",
				"batch", c.String(), "block", inc.Block.String(), "tx", inc.TxID.String())
			if err := a.reanchor(ctx, c); err != nil {
				return err
			}
		case err != nil:
			a.reg.am.errors.WithLabelValues("watch").Inc()
			return fmt.Errorf("keyregistry: anchoring: block %s: %w", inc.Block, err)
		case chain.Depth(ann.BlockNo, tip) >= 2*a.cfg.Depth:
			if err := a.reg.db.Delete(watchKey(c)); err != nil {
				return fmt.Errorf("keyregistry: anchoring: %w", err)
			}
		}
	}
	return nil
}

// reanchor anchors stored batch c again and replaces its proofs.
func (a *Anchoring) reanchor(ctx context.Context, c cid.Cid) error {
	raw, err := a.reg.Batch(c)
	if err != nil {
		return err
	}
	b, err := anchorproof.DecodeBatch(raw)
	if err != nil {
		return err
	}
	var seq uint64
	if err := a.reg.db.Update(func(txn *badger.Txn) error { seq, err = a.nextSeq(txn); return err }); err != nil {
		return fmt.Errorf("keyregistry: anchoring: %w", err)
	}
	t := anchorproof.TreeOf(b)
	ann, err := a.publish(ctx, c, t, seq)
	if err != nil {
		return err
	}
	if _, err := a.reg.storeProofs(raw, b, t, ann, proofOwn); err != nil {
		return err
	}
	if err := a.reg.db.Put(watchKey(c), ann.Encode()); err != nil {
		return fmt.Errorf("keyregistry: anchoring: %w", err)
	}
	a.reg.am.batches.Inc()
	a.reg.am.reanchors.Inc()
	a.reg.announce(ctx, ann)
	a.log.Info("batch anchored again after a rollback", "batch", c.String(), "seq", seq,
		"tx", ann.Inclusion().TxID.String(), "block", ann.BlockNo)
	return nil
}
