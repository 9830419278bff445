package relay

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// The expiry loop deletes each envelope in the first round after its TTL
// and counts it; the clock is the bubble's.
func TestExpiryLoop(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		cfg := DefaultConfig()
		s := &Service{cfg: cfg, log: slog.New(slog.DiscardHandler), now: time.Now}
		s.box = NewMailboxes(db.Prefix("relay/"), 0, time.Now)
		s.box.Start()
		defer s.box.Close()
		s.met, _ = newMetrics(prometheus.NewRegistry(), s.box)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go service.Every(ctx, time.Minute, s.expire)

		dev := testDevice(t)
		var envs []wire.Envelope
		for i, ttl := range []time.Duration{10 * time.Minute, 10 * time.Minute, time.Hour} {
			envs = append(envs, wire.Envelope{To: dev, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: ttl, Ciphertext: []byte{byte(i)}})
		}
		if _, err := s.box.Put(ctx, envs); err != nil {
			t.Fatal(err)
		}
		count := func() int {
			n, err := s.box.Count(dev)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		time.Sleep(9*time.Minute + 30*time.Second)
		synctest.Wait()
		if n := count(); n != 3 {
			t.Fatalf("%d envelopes before the first TTL", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n, exp := count(), counterValue(t, s.met.expired); n != 1 || exp != 2 {
			t.Fatalf("after 10m30s: %d envelopes left, %v expired", n, exp)
		}
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		if n, exp := count(), counterValue(t, s.met.expired); n != 0 || exp != 3 {
			t.Fatalf("after 1h: %d envelopes left, %v expired", n, exp)
		}
		cancel()
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
