package p2p_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkDHTPutGet puts a record on one node of the 10-node harness and
// reads it from another, reporting put and get latency percentiles.
func BenchmarkDHTPutGet(b *testing.B) {
	nw := tenNodes(b)
	var puts, gets []time.Duration
	i := 0
	for b.Loop() {
		key := fmt.Sprintf("/%s/bench-%d", testNamespace, i)
		value := fmt.Appendf(nil, "ok:%d", i)
		putter, getter := nw.Nodes[i%10].Host().DHT(), nw.Nodes[(i+5)%10].Host().DHT()
		start := time.Now()
		if err := putter.PutValue(b.Context(), key, value); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		got, err := getter.GetValue(b.Context(), key)
		if err != nil || string(got) != string(value) {
			b.Fatalf("get %s = %q, %v", key, got, err)
		}
		puts = append(puts, mid.Sub(start))
		gets = append(gets, time.Since(mid))
		i++
	}
	report(b, "put", puts)
	report(b, "get", gets)
}

func report(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	pct := func(p float64) float64 {
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}
