package devnet

import (
	"bytes"

	"github.com/blinklabs-io/gouroboros/protocol/blockfetch"
	"github.com/blinklabs-io/gouroboros/protocol/chainsync"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"
)

// follower is one ChainSync client: where it is on the chain and what it
// is owed. Its fields are guarded by the Devnet's mutex.
type follower struct {
	d      *Devnet
	server *chainsync.Server
	// height is how many blocks the client has: it is at blocks[height-1],
	// or at the origin when 0.
	height uint64
	// rollback: the next reply is a roll-backward to height (after an
	// intersection, as a real node does, or after the chain rolled back
	// while the client was not waiting).
	rollback bool
	// waiting: the client was told to await and is owed the next block.
	waiting bool
	closed  bool
}

// heightOfLocked finds p on the chain: the number of blocks up to and
// including it (0 for the origin).
func (d *Devnet) heightOfLocked(p pcommon.Point) (uint64, bool) {
	if p.Slot == 0 && len(p.Hash) == 0 {
		return 0, true
	}
	for i := len(d.blocks) - 1; i >= 0; i-- {
		b := d.blocks[i]
		if b.slot < p.Slot {
			break
		}
		if b.slot == p.Slot && bytes.Equal(b.hash[:], p.Hash) {
			return uint64(i + 1), true
		}
	}
	return 0, false
}

func (d *Devnet) pointAtLocked(height uint64) pcommon.Point {
	if height == 0 {
		return pcommon.NewPointOrigin()
	}
	b := d.blocks[height-1]
	return pointOf(b.slot, b.hash[:])
}

func (d *Devnet) chainsyncTipLocked() chainsync.Tip {
	t := d.tipLocked()
	return chainsync.Tip{Point: pointOf(t.Point.Slot, t.Point.Hash), BlockNumber: t.BlockNo}
}

// attachLocked records the client's server side and counts it among the
// followers the block maker serves.
func (f *follower) attachLocked(s *chainsync.Server) {
	f.server = s
	if !f.closed {
		f.d.followers[f] = struct{}{}
	}
}

func (f *follower) findIntersect(ctx chainsync.CallbackContext, points []pcommon.Point) (pcommon.Point, chainsync.Tip, error) {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	f.attachLocked(ctx.Server)
	tip := d.chainsyncTipLocked()
	for _, p := range points {
		if h, ok := d.heightOfLocked(p); ok {
			f.height, f.rollback, f.waiting = h, true, false
			return p, tip, nil
		}
	}
	return pcommon.Point{}, tip, chainsync.ErrIntersectNotFound
}

func (f *follower) requestNext(ctx chainsync.CallbackContext) error {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if f.server == nil {
		// A client that starts without an intersection starts at the
		// origin, and is told so first.
		f.rollback = true
	}
	f.attachLocked(ctx.Server)
	switch {
	case f.rollback:
		f.rollback = false
		return f.server.RollBackward(d.pointAtLocked(f.height), d.chainsyncTipLocked())
	case f.height < uint64(len(d.blocks)):
		return f.forwardLocked()
	default:
		f.waiting = true
		return f.server.AwaitReply()
	}
}

func (f *follower) forwardLocked() error {
	d := f.d
	b := d.blocks[f.height]
	f.height++
	return f.server.RollForward(blockTypeConwy, b.raw, d.chainsyncTipLocked())
}

// blockAdded serves a follower owed the block just made.
func (f *follower) blockAdded() {
	if !f.waiting || f.closed {
		return
	}
	f.waiting = false
	if err := f.forwardLocked(); err != nil {
		f.d.log.Debug("devnet: roll forward", "err", err)
	}
}

// rolledBack moves a follower past the new tip back to it (keep blocks).
func (f *follower) rolledBack(keep uint64) {
	if f.height <= keep || f.closed {
		return
	}
	f.height = keep
	if !f.waiting {
		f.rollback = true
		return
	}
	f.waiting = false
	if err := f.server.RollBackward(f.d.pointAtLocked(keep), f.d.chainsyncTipLocked()); err != nil {
		f.d.log.Debug("devnet: roll backward", "err", err)
	}
}

// requestRange serves a BlockFetch range, both ends included.
func (d *Devnet) requestRange(ctx blockfetch.CallbackContext, start, end pcommon.Point) error {
	d.mu.Lock()
	from, ok1 := d.heightOfLocked(start)
	to, ok2 := d.heightOfLocked(end)
	var raws [][]byte
	if ok1 && ok2 && from > 0 && to >= from {
		for _, b := range d.blocks[from-1 : to] {
			raws = append(raws, b.raw)
		}
	}
	d.mu.Unlock()
	if len(raws) == 0 {
		return ctx.Server.NoBlocks()
	}
	if err := ctx.Server.StartBatch(); err != nil {
		return err
	}
	for _, raw := range raws {
		if err := ctx.Server.Block(blockTypeConwy, raw); err != nil {
			return err
		}
	}
	return ctx.Server.BatchDone()
}
