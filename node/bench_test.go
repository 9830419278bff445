package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
)

// BenchmarkStartToHealthy measures a node's start-up: New and Start on a
// fresh data directory, then GET /healthz until it answers 200.
func BenchmarkStartToHealthy(b *testing.B) {
	var total time.Duration
	runs := 0
	for b.Loop() {
		cfg := testnet.Config(b.TempDir())
		start := time.Now()
		n, err := node.New(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		tstest.WaitFor(b, time.Minute, func() error {
			resp, err := http.Get(n.APIURL() + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthz: %s", resp.Status)
			}
			return nil
		})
		total += time.Since(start)
		runs++
		b.StopTimer()
		n.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(runs), "ms-to-healthy")
}
