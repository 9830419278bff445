package backupstore_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/wire"
)

// BenchmarkChunkPut measures uploads through one node to 3 replicas
// (write quorum 2) on a 3-node loopback network, 1 MiB chunks, with synced
// writes, one chunk at a time: the MB/s of a client that waits for each
// chunk before sending the next.
func BenchmarkChunkPut(b *testing.B) {
	nw := backupNet(b, 3, func(_ int, c *backupstore.Config) { c.QuotaBytes, c.QuotaChunks = 1<<40, 1<<30 })
	u := register(b, nw, nw.Nodes[0])
	entry := nw.Nodes[0]
	chunk := randomChunk(1 << 20)
	n := 0
	start := time.Now()
	for b.Loop() {
		chunk[0], chunk[1], chunk[2] = byte(n), byte(n>>8), byte(n>>16)
		c := wire.ChunkCID(chunk)
		if _, err := entry.Backup().Put(b.Context(), c, chunk, false, auth(u.phone, u.id, entry, c.String())); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)*float64(len(chunk))/1e6/time.Since(start).Seconds(), "MB/s")
}

// BenchmarkChunkPutParallel is BenchmarkChunkPut with 8 chunks in flight,
// as a client that pipelines its uploads keeps them: concurrent chunks
// share the storage nodes' fsyncs and the network.
func BenchmarkChunkPutParallel(b *testing.B) {
	nw := backupNet(b, 3, func(_ int, c *backupstore.Config) { c.QuotaBytes, c.QuotaChunks = 1<<40, 1<<30 })
	u := register(b, nw, nw.Nodes[0])
	entry := nw.Nodes[0]
	var n atomic.Int64
	b.SetParallelism(4) // 2 cores × 4 = 8 uploads in flight
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		chunk := randomChunk(1 << 20)
		for pb.Next() {
			chunk[0]++
			c := wire.ChunkCID(chunk)
			if _, err := entry.Backup().Put(b.Context(), c, chunk, false, auth(u.phone, u.id, entry, c.String())); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())*(1<<20)/1e6/time.Since(start).Seconds(), "MB/s")
}
