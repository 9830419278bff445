package backupstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Limits of the cache of what users' newest backups reference, which the
// checks of replicate requests read: a repair pushes many chunks of one
// user in a row, and each would otherwise read the pointer and manifest.
const (
	// refCacheTTL is how long a user's references are reused.
	refCacheTTL = time.Minute
	// maxRefCache bounds the users cached; past it the cache starts over.
	maxRefCache = 1024
)

// refCache holds, per user, what the newest backup references.
type refCache struct {
	mu sync.Mutex
	m  map[ident.UserID]refEntry
}

type refEntry struct {
	refs    backupRefs
	expires time.Time
}

func newRefCache() *refCache { return &refCache{m: make(map[ident.UserID]refEntry)} }

func (c *refCache) get(user ident.UserID, now time.Time) (backupRefs, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[user]
	if !ok || !now.Before(e.expires) {
		return backupRefs{}, false
	}
	return e.refs, true
}

func (c *refCache) put(user ident.UserID, refs backupRefs, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxRefCache {
		clear(c.m)
	}
	c.m[user] = refEntry{refs: refs, expires: now.Add(refCacheTTL)}
}

// referenced reports whether c is user's newest backup's manifest or
// listed by it.
func (s *Service) referenced(ctx context.Context, user ident.UserID, c cid.Cid) (bool, error) {
	now := s.now()
	refs, ok := s.refs.get(user, now)
	if !ok {
		var err error
		if refs, err = s.newestBackup(ctx, user); err != nil {
			return false, err
		}
		s.refs.put(user, refs, now)
	}
	return refs.cids[c], nil
}

// checkReplicate is the time bound of a replicate request, whose
// authorization (checked without the upload window) may be old: one
// dated at most backup.gc_grace ago is accepted, as the chunk is younger
// than any the GC deletes; an older one only for a chunk the user's
// newest backup references, so an old authorization replayed for a chunk
// the user has dropped is refused. An authorization dated more than
// wire.BackupTimeSkew ahead of this node's clock is refused.
func (s *Service) checkReplicate(ctx context.Context, a authorization, c cid.Cid) error {
	age := s.now().Sub(a.Time)
	switch {
	case age < -wire.BackupTimeSkew:
		return fmt.Errorf("%w: replicate of %s: authorization dated %s, in the future", ErrUnauthenticated, c, a.Time.Format(time.RFC3339))
	case age <= s.cfg.GCGrace.Std():
		return nil
	}
	ok, err := s.referenced(ctx, a.User, c)
	if err != nil {
		return fmt.Errorf("%w: replicate of %s with an authorization of %s, older than backup.gc_grace (%s): the backup of %s cannot be read: %w",
			ErrUnauthenticated, c, a.Time.Format(time.RFC3339), s.cfg.GCGrace, a.User, err)
	}
	if !ok {
		return fmt.Errorf("%w: replicate of %s with an authorization of %s, older than backup.gc_grace (%s), and the newest backup of %s does not reference it",
			ErrUnauthenticated, c, a.Time.Format(time.RFC3339), s.cfg.GCGrace, a.User)
	}
	return nil
}
