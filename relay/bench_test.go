package relay

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/volo-chat/volo/wire"
)

// BenchmarkDurablePut measures durable envelope writes (fsync before the
// call returns) on one node's store: 64 concurrent senders, 1 KiB each, to
// 1000 mailboxes. Group commit lets one fsync serve every sender waiting.
func BenchmarkDurablePut(b *testing.B) {
	m, _ := openMailboxes(b, b.TempDir(), 1<<30, &clock{now: t0})
	devs := make([]wire.Envelope, 1000)
	for i := range devs {
		dev, key := contactOf(b, m)
		devs[i] = contactEnv(dev, key, "", wire.DefaultTTL)
	}
	body := make([]byte, 1024)
	rand.Read(body)
	b.SetParallelism(32) // 2 cores × 32 = 64 senders
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d := devs[i%len(devs)]
			e := wire.Envelope{To: d.To, ID: wire.NewEnvelopeID(), Time: t0, TTL: wire.DefaultTTL, Ciphertext: body, Delivery: d.Delivery}
			res, err := m.Put(context.Background(), []wire.Envelope{e})
			if err != nil || res[0].Err != nil {
				b.Errorf("put: %v %+v", err, res)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "envelopes/s")
}

// BenchmarkDurablePutBatch measures one sender committing 256 envelopes of
// 1 KiB per call: the cost of one synced group commit, without waiting on
// other senders.
func BenchmarkDurablePutBatch(b *testing.B) {
	m, _ := openMailboxes(b, b.TempDir(), 1<<30, &clock{now: t0})
	dev, key := contactOf(b, m)
	body := make([]byte, 1024)
	rand.Read(body)
	const batch = 256
	n := 0
	start := time.Now()
	for b.Loop() {
		envs := make([]wire.Envelope, batch)
		for i := range envs {
			envs[i] = wire.Envelope{To: dev, ID: wire.NewEnvelopeID(), Time: t0, TTL: wire.DefaultTTL, Ciphertext: body, Delivery: key}
		}
		if _, err := m.Put(context.Background(), envs); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "envelopes/s")
}
