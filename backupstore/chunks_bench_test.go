package backupstore

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// BenchmarkChunkStoreCommit measures one storage node's disk path: 1 MiB
// chunks stored with synced writes, by one writer at a time and by 8 at
// once (as when several uploads reach the node together), in MB/s. The
// store does not hash (the node checks a chunk before it stores it), so
// each write uses the same bytes under a distinct key.
func BenchmarkChunkStoreCommit(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run("writers="+string(rune('0'+writers)), func(b *testing.B) {
			db, err := store.Open(store.Options{Dir: b.TempDir(), SyncWrites: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			cs := newChunkStore(db.Prefix("b/"), 1<<50, 1<<40)
			cs.start()
			defer cs.close()
			user := newTestUser(b)
			const size = 1 << 20
			data := make([]byte, size)
			rand.Read(data)
			var next atomic.Int64
			put := func() {
				key := wire.ChunkCID(binary.BigEndian.AppendUint64(nil, uint64(next.Add(1))))
				if _, err := cs.put(b.Context(), key, data, user.meta(size)); err != nil {
					b.Error(err)
				}
			}
			start := time.Now()
			if writers == 1 {
				for b.Loop() {
					put()
				}
			} else {
				b.SetParallelism(writers / 2) // 2 cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						put()
					}
				})
			}
			b.ReportMetric(float64(next.Load())*size/1e6/time.Since(start).Seconds(), "MB/s")
		})
	}
}
