package relay_test

import (
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// BenchmarkSendThreeNodes measures durable envelopes/s through one node of
// a 3-node harness (k=3, write quorum 2, fsync before each relay answers):
// 64 concurrent senders, one 1 KiB envelope per Send, to 256 devices.
func BenchmarkSendThreeNodes(b *testing.B) {
	nw := relayNet(b, 3, 3, 2, nil)
	devs := make([]ident.DeviceID, 256)
	keys := make([][]byte, len(devs))
	for i := range devs {
		k := deviceKeys(b)
		devs[i], keys[i] = k.ID(), contact(b, nw, k)
	}
	body := make([]byte, 1024)
	rand.Read(body)
	svc := nw.Nodes[0].Relay()
	var next atomic.Uint64
	b.SetParallelism(32) // 2 cores × 32 = 64 senders
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) % uint64(len(devs))
			e := wire.Envelope{To: devs[i], ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: body, Delivery: keys[i]}
			res, err := svc.Send(b.Context(), []wire.Envelope{e})
			if err != nil || res[0].Err != nil {
				b.Errorf("send: %v %+v", err, res)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "envelopes/s")
}
