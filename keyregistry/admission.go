package keyregistry

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Bounds of the memory of the new-user budget.
const (
	// maxAttesters bounds the attesting nodes whose budget is tracked.
	// When every tracked bucket is in use (not full), users attested by
	// yet another node are refused until a bucket refills.
	maxAttesters = 4096
	// maxSeenUsers bounds the users remembered as already counted; a user
	// forgotten (and not in the store) is counted again when seen again.
	maxSeenUsers = 1 << 16
)

// newUsers is the per-node budget of new users per attesting node: a
// token bucket per attesting peer, of capacity perWindow, refilled at
// perWindow per window. A user is counted once, on first sight: when it
// is neither in the store (known) nor already counted.
type newUsers struct {
	perWindow float64
	window    time.Duration
	known     func(ident.UserID) bool
	log       *slog.Logger
	refused   func()

	mu      sync.Mutex
	buckets map[peer.ID]*userBucket
	seen    map[ident.UserID]struct{}
}

type userBucket struct {
	tokens float64
	last   time.Time
	warned bool // logged that it ran out, since the last user it admitted
}

func newNewUsers(perWindow int, window time.Duration, known func(ident.UserID) bool, log *slog.Logger, refused func()) *newUsers {
	return &newUsers{
		perWindow: float64(perWindow), window: window, known: known, log: log, refused: refused,
		buckets: make(map[peer.ID]*userBucket), seen: make(map[ident.UserID]struct{}),
	}
}

// admit counts user, attested by node, unless it was counted before or
// the node holds it; it fails with ErrAttestBudget when node's bucket is
// empty.
func (b *newUsers) admit(user ident.UserID, node peer.ID) error {
	b.mu.Lock()
	_, seen := b.seen[user]
	b.mu.Unlock()
	if seen || b.known(user) {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[user]; ok {
		return nil
	}
	now := time.Now()
	bk := b.bucket(node, now)
	if bk == nil {
		b.refused()
		return fmt.Errorf("%w: %s (tracking %d attesting nodes, none with a full budget)", ErrAttestBudget, node, maxAttesters)
	}
	bk.tokens = min(b.perWindow, bk.tokens+b.perWindow*float64(now.Sub(bk.last))/float64(b.window))
	bk.last = now
	if bk.tokens < 1 {
		b.refused()
		if !bk.warned {
			bk.warned = true
			b.log.Warn("an attesting node is over its budget of new users; its new users are refused until it refills",
				"node", node.String(), "budget", b.perWindow, "window", b.window.String(), "setting", "registry.new_users_per_attester")
		}
		return fmt.Errorf("%w: %s", ErrAttestBudget, node)
	}
	bk.tokens--
	bk.warned = false
	if len(b.seen) >= maxSeenUsers {
		for u := range b.seen { // forget an arbitrary user
			delete(b.seen, u)
			break
		}
	}
	b.seen[user] = struct{}{}
	return nil
}

// bucket returns node's bucket, making a full one if there is room (after
// dropping buckets that have refilled completely); nil if there is none.
func (b *newUsers) bucket(node peer.ID, now time.Time) *userBucket {
	if bk, ok := b.buckets[node]; ok {
		return bk
	}
	if len(b.buckets) >= maxAttesters {
		for id, bk := range b.buckets {
			if now.Sub(bk.last) >= b.window {
				delete(b.buckets, id)
			}
		}
		if len(b.buckets) >= maxAttesters {
			return nil
		}
	}
	bk := &userBucket{tokens: b.perWindow, last: now}
	b.buckets[node] = bk
	return bk
}
