package backupstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// GC deletes the chunks the user's newest backup has dropped, on positive
// evidence only: for each user holding chunks here, the chunks stored more
// than GCGrace ago whose upload authorization is dated before the user's
// newest pointer that counts (so the pointer was made after them), that
// are neither that pointer's
// manifest, nor listed by it (read and decoded), nor listed by a manifest
// of the user stored here within GCGrace. A user with no pointer that
// counts, or whose pointer, chain or manifest cannot be read, keeps every
// chunk: "not found" is never a reason to delete. It returns the number
// deleted.
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
		refs, err := s.newestBackup(ctx, owner)
		if err != nil {
			s.log.Info("gc: keeping every chunk of a user with no readable backup", "user", owner.String(), "err", err)
			continue
		}
		live := s.recentlyListed(chunks, now, grace)
		for c := range refs.cids {
			live[c] = true
		}
		for _, c := range collectable(chunks, live, refs.pointer.Time, now, grace) {
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

// recentlyListed is the set of chunks listed by the manifests among
// chunks stored here within grace: a backup still being made.
func (s *Service) recentlyListed(chunks []heldChunk, now time.Time, grace time.Duration) map[cid.Cid]bool {
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
	return live
}

// backupRefs is what a user's newest backup references.
type backupRefs struct {
	// pointer is the user's newest pointer that counts.
	pointer wire.BackupPointer
	// cids holds its manifest and every chunk the manifest lists.
	cids map[cid.Cid]bool
}

// newestBackup reads user's newest pointer that counts (and keeps it) and
// its manifest, which must decode and be the user's.
func (s *Service) newestBackup(ctx context.Context, user ident.UserID) (backupRefs, error) {
	r, b, err := s.newestPointer(ctx, user)
	if err != nil {
		return backupRefs{}, err
	}
	s.keepPointer(r, b)
	data, err := s.Get(ctx, r.Pointer.Manifest)
	if err != nil {
		return backupRefs{}, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	m, err := wire.DecodeManifest(data)
	if err != nil {
		return backupRefs{}, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	if !m.User.Equal(user) {
		return backupRefs{}, fmt.Errorf("%w: pointer of %s names the manifest of %s", wire.ErrBadManifest, user, m.User)
	}
	refs := backupRefs{pointer: r.Pointer, cids: make(map[cid.Cid]bool, len(m.Chunks)+1)}
	refs.cids[r.Pointer.Manifest] = true
	for _, mc := range m.Chunks {
		refs.cids[mc.CID] = true
	}
	return refs, nil
}

// collectable is GC's decision: the chunks stored more than grace before
// now, authorized before pointerTime (both times are the device's clock:
// the pointer was made after the upload and left them out) and not in
// live.
func collectable(chunks []heldChunk, live map[cid.Cid]bool, pointerTime, now time.Time, grace time.Duration) []cid.Cid {
	var out []cid.Cid
	for _, h := range chunks {
		old := now.Sub(time.UnixMilli(h.Meta.Stored)) > grace
		if old && time.Unix(h.Meta.Time, 0).Before(pointerTime) && !live[h.CID] {
			out = append(out, h.CID)
		}
	}
	return out
}
