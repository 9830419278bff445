package cardano

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	ouroboros "github.com/blinklabs-io/gouroboros"
	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/protocol/blockfetch"
	"github.com/blinklabs-io/gouroboros/protocol/chainsync"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"

	"github.com/volo-chat/volo/chain"
)

// syncPipeline is how many chain-sync requests a follower keeps in flight.
const syncPipeline = 10

// reader reads a chain from a Cardano node. Each call opens its own
// connection: a verifier makes a few calls, and no call can leave a
// shared connection in a protocol state the next one does not expect.
type reader struct {
	e endpoint
}

// DialNodeToClient returns a chain.Reader over a cardano-node's local
// socket: ChainSync delivers whole blocks, and Block reads forward from
// the point before the one asked for.
func DialNodeToClient(ctx context.Context, socket string, magic uint32) (chain.Reader, error) {
	return newReader(ctx, endpoint{network: "unix", addr: socket, magic: magic})
}

// DialNodeToNode returns a chain.Reader over a relay's node-to-node TCP
// port (host:port): ChainSync headers for Tip and Follow, BlockFetch for
// Block.
func DialNodeToNode(ctx context.Context, hostport string, magic uint32) (chain.Reader, error) {
	return newReader(ctx, endpoint{network: "tcp", addr: hostport, magic: magic})
}

// newReader checks that the node answers the handshake with this magic.
func newReader(ctx context.Context, e endpoint) (*reader, error) {
	c, err := dial(ctx, e)
	if err != nil {
		return nil, err
	}
	c.Close()
	return &reader{e: e}, nil
}

func (r *reader) Close() error { return nil }

// Tip asks the node for its tip.
func (r *reader) Tip(ctx context.Context) (chain.Tip, error) {
	c, err := dial(ctx, r.e)
	if err != nil {
		return chain.Tip{}, err
	}
	defer c.Close()
	var tip *chainsync.Tip
	err = withContext(ctx, func() { c.Close() }, func() error {
		var err error
		tip, err = c.ChainSync().Client.GetCurrentTip()
		return err
	})
	if err != nil {
		return chain.Tip{}, fmt.Errorf("cardano: tip from %s: %w", r.e, err)
	}
	return chain.Tip{Point: fromPoint(tip.Point), BlockNo: tip.BlockNumber}, nil
}

// Block fetches the block at p and decodes it with DecodeBlock.
func (r *reader) Block(ctx context.Context, p, prev chain.Point) (*chain.Block, error) {
	if p.IsOrigin() {
		return nil, fmt.Errorf("cardano: block at the origin: %w", chain.ErrNotFound)
	}
	var b *chain.Block
	var err error
	if r.e.nodeToNode() {
		b, err = r.fetchBlock(ctx, p)
	} else {
		b, err = r.blockAfter(ctx, p, prev)
	}
	if err != nil {
		return nil, err
	}
	if !samePoint(b.Point, p) {
		return nil, fmt.Errorf("cardano: block %s: the node has %s there: %w", p, b.Point, chain.ErrNotFound)
	}
	return b, nil
}

// fetchBlock asks for p with BlockFetch (node-to-node).
func (r *reader) fetchBlock(ctx context.Context, p chain.Point) (*chain.Block, error) {
	c, err := dial(ctx, r.e)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var blk ledger.Block
	err = withContext(ctx, func() { c.Close() }, func() error {
		var err error
		blk, err = c.BlockFetch().Client.GetBlock(toPoint(p))
		return err
	})
	if errors.Is(err, blockfetch.ErrNoBlocks) {
		return nil, fmt.Errorf("cardano: block %s from %s: %w", p, r.e, chain.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cardano: block %s from %s: %w", p, r.e, err)
	}
	return DecodeBlock(uint(blk.Type()), blk.Cbor())
}

// blockAfter reads the block after prev with ChainSync (node-to-client).
func (r *reader) blockAfter(ctx context.Context, p, prev chain.Point) (*chain.Block, error) {
	s, err := startSync(ctx, r.e, []chain.Point{prev})
	if err != nil {
		return nil, fmt.Errorf("cardano: block %s after %s: %w", p, prev, err)
	}
	defer s.close()
	for {
		it, err := s.next(ctx)
		if err != nil {
			return nil, fmt.Errorf("cardano: block %s after %s: %w", p, prev, err)
		}
		switch {
		case it.await:
			return nil, fmt.Errorf("cardano: block %s: no block after %s: %w", p, prev, chain.ErrNotFound)
		case it.rollback:
			continue // to the intersection, prev
		default:
			return DecodeBlock(it.blockType, it.raw)
		}
	}
}

// Follow reports every block after the newest of from and every rollback.
func (r *reader) Follow(ctx context.Context, from []chain.Point, fn func(chain.Event) error) error {
	return follow(ctx, r.e, from, func(ev chain.Event, _ *chain.Block) error { return fn(ev) })
}

// follow is Follow with the decoded block too on node-to-client
// connections (nil on node-to-node, which sees headers only).
func follow(ctx context.Context, e endpoint, from []chain.Point, fn func(chain.Event, *chain.Block) error) error {
	s, err := startSync(ctx, e, from)
	if err != nil {
		return fmt.Errorf("cardano: follow %s: %w", e, err)
	}
	defer s.close()
	started := false
	for {
		it, err := s.next(ctx)
		if err != nil {
			return fmt.Errorf("cardano: follow %s: %w", e, err)
		}
		tip := chain.Tip{Point: fromPoint(it.tip.Point), BlockNo: it.tip.BlockNumber}
		switch {
		case it.await:
			continue
		case it.rollback:
			// The first message after an intersection rolls back to it:
			// nothing the caller has seen changes.
			if !started && (len(from) == 0 && it.point.IsOrigin() || containsPoint(from, it.point)) {
				started = true
				continue
			}
			started = true
			if err := fn(chain.Event{Rollback: true, Point: it.point, Tip: tip}, nil); err != nil {
				return err
			}
		default:
			started = true
			var ev chain.Event
			var b *chain.Block
			if e.nodeToNode() {
				h, err := ledger.NewBlockHeaderFromCbor(it.blockType, it.raw)
				if err != nil {
					return fmt.Errorf("cardano: follow %s: header: %w", e, err)
				}
				ev = chain.Event{Point: chain.Point{Slot: h.SlotNumber(), Hash: h.Hash().Bytes()}, BlockNo: h.BlockNumber(), Tip: tip}
			} else {
				b, err = DecodeBlock(it.blockType, it.raw)
				if err != nil {
					return fmt.Errorf("cardano: follow %s: %w", e, err)
				}
				ev = chain.Event{Point: b.Point, BlockNo: b.BlockNo, Tip: tip}
			}
			if err := fn(ev, b); err != nil {
				return err
			}
		}
	}
}

func containsPoint(ps []chain.Point, p chain.Point) bool {
	for _, q := range ps {
		if samePoint(q, p) {
			return true
		}
	}
	return false
}

// syncItem is one message of a chain-sync session.
type syncItem struct {
	await     bool // the node has nothing newer for now
	rollback  bool
	point     chain.Point // where a rollback goes
	blockType uint
	raw       []byte // the block (node-to-client) or its header (node-to-node)
	tip       chainsync.Tip
}

// syncSession is a ChainSync client on its own connection whose
// callbacks hand messages over a channel to the caller's goroutine.
type syncSession struct {
	c         *conn
	items     chan syncItem
	done      chan struct{}
	closeOnce sync.Once
}

func startSync(ctx context.Context, e endpoint, from []chain.Point) (*syncSession, error) {
	s := &syncSession{items: make(chan syncItem), done: make(chan struct{})}
	send := func(it syncItem) error {
		select {
		case s.items <- it:
			return nil
		case <-s.done:
			return chainsync.ErrStopSyncProcess
		}
	}
	cfg := chainsync.NewConfig(
		chainsync.WithPipelineLimit(syncPipeline),
		chainsync.WithRollForwardRawFunc(func(_ chainsync.CallbackContext, blockType uint, raw []byte, tip chainsync.Tip) error {
			return send(syncItem{blockType: blockType, raw: bytes.Clone(raw), tip: tip})
		}),
		chainsync.WithRollBackwardFunc(func(_ chainsync.CallbackContext, p pcommon.Point, tip chainsync.Tip) error {
			return send(syncItem{rollback: true, point: fromPoint(p), tip: tip})
		}),
		chainsync.WithAwaitReplyFunc(func(chainsync.CallbackContext) error {
			return send(syncItem{await: true})
		}),
	)
	c, err := dial(ctx, e, ouroboros.WithChainSyncConfig(cfg))
	if err != nil {
		return nil, err
	}
	s.c = c
	points := make([]pcommon.Point, 0, len(from))
	for _, p := range from {
		points = append(points, toPoint(p))
	}
	if len(points) == 0 {
		points = append(points, pcommon.NewPointOrigin())
	}
	err = withContext(ctx, s.close, func() error { return c.ChainSync().Client.Sync(points) })
	if errors.Is(err, chainsync.ErrIntersectNotFound) {
		s.close()
		return nil, fmt.Errorf("none of %d points is on the chain: %w", len(from), chain.ErrNotFound)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// next waits for the session's next message.
func (s *syncSession) next(ctx context.Context) (syncItem, error) {
	select {
	case it := <-s.items:
		return it, nil
	case err := <-s.c.errs:
		return syncItem{}, fmt.Errorf("connection: %w", err)
	case <-ctx.Done():
		return syncItem{}, ctx.Err()
	}
}

func (s *syncSession) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.c != nil {
			s.c.Close()
		}
	})
}
