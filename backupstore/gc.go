package backupstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// GC deletes the chunks no backup refers to: for each user holding chunks
// here, the chunks older than GCGrace that are neither the manifest named
// by the user's newest pointer, nor listed by it, nor listed by a manifest
// of the user stored here within GCGrace. A user whose pointer or manifest
// cannot be read keeps every chunk. It returns the number deleted.
func (s *Service) GC(ctx context.Context) (int, error) { return s.GCAt(ctx, s.now()) }

// GCAt is GC as if the time were now: how the tests show what GC keeps
// and deletes once the grace period has passed.
func (s *Service) GCAt(ctx context.Context, now time.Time) (int, error) {
	held, err := s.cs.list()
	if err != nil {
		return 0, fmt.Errorf("backupstore: gc: %w", err)
	}
	byOwner := make(map[ident.UserID][]heldChunk)
	for _, h := range held {
		byOwner[h.Meta.Owner] = append(byOwner[h.Meta.Owner], h)
	}
	grace := s.cfg.GCGrace.Std()
	deleted := 0
	var errs []error
	for owner, chunks := range byOwner {
		if ctx.Err() != nil {
			return deleted, ctx.Err()
		}
		live, err := s.liveSet(ctx, owner, chunks, now, grace)
		if err != nil {
			s.log.Info("gc: keeping every chunk of a user whose backup cannot be read", "user", owner.String(), "err", err)
			continue
		}
		for _, c := range collectable(chunks, live, now, grace) {
			size := uint64(0)
			if m, ok, _ := s.cs.meta(c); ok {
				size = m.Size
			}
			ok, err := s.cs.remove(ctx, c, owner)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				deleted++
				s.met.gcDeleted.Inc()
				s.met.gcBytes.Add(float64(size))
			}
		}
	}
	if deleted > 0 {
		s.log.Info("collected chunks no backup refers to", "chunks", deleted)
	}
	return deleted, errors.Join(errs...)
}

// liveSet is the set of CIDs of owner that GC keeps: the newest pointer's
// manifest and its chunks, and the chunks of the owner's manifests stored
// here within grace.
func (s *Service) liveSet(ctx context.Context, owner ident.UserID, chunks []heldChunk, now time.Time, grace time.Duration) (map[cid.Cid]bool, error) {
	live := make(map[cid.Cid]bool)
	for _, h := range chunks {
		if h.Meta.Kind != kindManifest || now.Sub(time.UnixMilli(h.Meta.Stored)) > grace {
			continue
		}
		data, err := s.getLocal(h.CID)
		if err != nil {
			continue
		}
		m, err := wire.DecodeManifest(data)
		if err != nil {
			continue
		}
		for _, mc := range m.Chunks {
			live[mc.CID] = true
		}
	}
	b, err := s.Pointer(ctx, owner)
	if errors.Is(err, ErrNotFound) && errors.Is(err, routing.ErrNotFound) {
		return live, nil // no backup pointer at all: nothing old is referenced
	}
	if err != nil {
		return nil, err
	}
	r, err := wire.DecodePointerRecord(b)
	if err != nil {
		return nil, err
	}
	live[r.Pointer.Manifest] = true
	data, err := s.Get(ctx, r.Pointer.Manifest)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	m, err := wire.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	for _, mc := range m.Chunks {
		live[mc.CID] = true
	}
	return live, nil
}

// collectable is GC's decision: the chunks older than grace at now that
// are not in live.
func collectable(chunks []heldChunk, live map[cid.Cid]bool, now time.Time, grace time.Duration) []cid.Cid {
	var out []cid.Cid
	for _, h := range chunks {
		if now.Sub(time.UnixMilli(h.Meta.Stored)) > grace && !live[h.CID] {
			out = append(out, h.CID)
		}
	}
	return out
}
