package keyregistry

import (
	"crypto/sha256"
	"sync"

	"github.com/volo-chat/volo/ident"
)

// verifiedCacheSize and verifiedCacheBytes bound the verified records the
// registry remembers: how many, and their encoded size in all.
// Verifying a chain costs about a millisecond per few links (every
// signature), and lookups of the same users come in bursts (a backup's
// every chunk, every WebSocket authentication); a remembered record costs
// a hash of its bytes.
const (
	verifiedCacheSize  = 4096
	verifiedCacheBytes = 32 << 20
)

// verifiedRecords remembers chains decoded and verified from exact record
// bytes. Chains are immutable values (DeviceSet.Apply returns a new set,
// Links is never appended to in place), so one may be handed to many
// callers.
type verifiedRecords struct {
	mu    sync.Mutex
	m     map[verifiedKey]verifiedEntry
	bytes int
}

type verifiedEntry struct {
	chain Chain
	size  int
}

type verifiedKey struct {
	user string
	sum  [sha256.Size]byte
}

// decode is DecodeRecord, remembering what verified.
func (v *verifiedRecords) decode(data []byte, user ident.UserID) (Chain, error) {
	k := verifiedKey{user: user.String(), sum: sha256.Sum256(data)}
	v.mu.Lock()
	e, ok := v.m[k]
	v.mu.Unlock()
	if ok {
		return e.chain, nil
	}
	c, err := DecodeRecord(data, user)
	if err != nil {
		return Chain{}, err
	}
	c.Links = c.Links[:len(c.Links):len(c.Links)]
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[verifiedKey]verifiedEntry)
	}
	if _, ok := v.m[k]; ok || len(data) > verifiedCacheBytes/16 {
		return c, nil
	}
	for k, e := range v.m { // drop arbitrary entries until there is room
		if len(v.m) < verifiedCacheSize && v.bytes+len(data) <= verifiedCacheBytes {
			break
		}
		delete(v.m, k)
		v.bytes -= e.size
	}
	v.m[k] = verifiedEntry{chain: c, size: len(data)}
	v.bytes += len(data)
	return c, nil
}
