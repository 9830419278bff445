package backupstore_test

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/node"
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
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		chunk[0], chunk[1], chunk[2] = byte(n), byte(n>>8), byte(n>>16)
		c := wire.ChunkCID(chunk)
		if _, err := entry.Backup().Put(b.Context(), c, chunk, false, auth(u.phone, u.id, entry, c.String())); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)*float64(len(chunk))/1e6/time.Since(start).Seconds(), "MB/s")
	reportCPU(b, cpu, n)
}

// cpuTime is the CPU time (user and system) the process has used: the
// whole network runs in it, so CPU per chunk is what a chunk costs the
// three nodes together, a figure that a busy machine disturbs less than
// the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU milliseconds per chunk since cpu.
func reportCPU(b *testing.B, cpu time.Duration, chunks int) {
	if chunks > 0 {
		b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(chunks), "cpu-ms/chunk")
	}
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
	start, cpu := time.Now(), cpuTime()
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
	reportCPU(b, cpu, int(n.Load()))
}

// BenchmarkChunkGet measures reads of 1 MiB chunks on a 4-node loopback
// network with 3 replicas: "holder" reads through a node holding the
// chunk (its store, checked against the CID), "non-holder" through the
// node that does not (fetched from a holder, which checks it, and checked
// again), one chunk at a time and with 8 reads in flight ("parallel").
func BenchmarkChunkGet(b *testing.B) {
	nw := backupNet(b, 4, func(_ int, c *backupstore.Config) { c.QuotaBytes, c.QuotaChunks = 1<<40, 1<<30 })
	u := register(b, nw, nw.Nodes[0])
	const chunks, size = 64, 1 << 20
	cids := make([]cid.Cid, chunks)
	for i := range cids {
		data := randomChunk(size)
		cids[i] = wire.ChunkCID(data)
		entry := nw.Nodes[i%len(nw.Nodes)]
		if _, err := entry.Backup().Put(b.Context(), cids[i], data, false, auth(u.phone, u.id, entry, cids[i].String())); err != nil {
			b.Fatal(err)
		}
	}
	// Every chunk's holders are 3 of the 4 nodes: pick, per chunk, one
	// holder and the node that does not hold it.
	holder, other := make([]*node.Node, chunks), make([]*node.Node, chunks)
	for i, c := range cids {
		for _, nd := range nw.Nodes {
			if ok, err := nd.Backup().Has(c); err != nil {
				b.Fatal(err)
			} else if ok {
				holder[i] = nd
			} else {
				other[i] = nd
			}
		}
		if holder[i] == nil || other[i] == nil {
			b.Fatalf("chunk %d is not on 3 of the 4 nodes", i)
		}
	}
	for _, bc := range []struct {
		name     string
		through  []*node.Node
		parallel bool
	}{
		{"holder", holder, false},
		{"non-holder", other, false},
		{"holder-parallel", holder, true},
		{"non-holder-parallel", other, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			get := func(i int) {
				data, err := bc.through[i%chunks].Backup().Get(b.Context(), cids[i%chunks])
				if err != nil || len(data) != size {
					b.Errorf("chunk %d: %d bytes, %v", i%chunks, len(data), err)
				}
			}
			var n atomic.Int64
			start, cpu := time.Now(), cpuTime()
			if bc.parallel {
				b.SetParallelism(4) // 2 cores × 4 = 8 reads in flight
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						get(int(n.Add(1)))
					}
				})
			} else {
				for b.Loop() {
					get(int(n.Add(1)))
				}
			}
			b.ReportMetric(float64(n.Load())*size/1e6/time.Since(start).Seconds(), "MB/s")
			reportCPU(b, cpu, int(n.Load()))
		})
	}
}
