package api_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/wire"
)

// BenchmarkRegistration measures registrations per second on one node with
// open registration through the full HTTP path (nonce, then POST /v1/users
// with genesis and proof), 8 clients at once, synced writes. Device keys
// are made before the timer starts: they are the client's work.
func BenchmarkRegistration(b *testing.B) {
	nw := testnet.New(b, 1)
	a := nw.Nodes[0].APIURL()
	keys := make([]e2ee.DeviceKeys, b.N)
	for i := range keys {
		keys[i] = newKeys(b)
	}
	var next atomic.Int64
	b.SetParallelism(4) // 4 × GOMAXPROCS clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := keys[next.Add(1)-1]
			req, _ := registration(b, a, k, "")
			var v wire.ChainVersion
			if st, code := call(b, "POST", a+"/v1/users", req, &v); st != 201 {
				b.Errorf("register: %d %s", st, code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "registrations/s")
}

// BenchmarkLookup10Nodes measures verified lookups (GET /v1/users/{id},
// the node verifying the chain) on the 10-node harness. cold: the chain is
// in the DHT only (put there by node 0, never gossiped) and the asking
// node never saw the user; cached: the same node asks again. Reports p50
// and p99 latency.
func BenchmarkLookup10Nodes(b *testing.B) {
	nw := testnet.New(b, 10)
	ctx := context.Background()
	// users[i] is looked up cold by node 1 + i%9.
	prepare := func(n int) []ident.UserID {
		users := make([]ident.UserID, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range users {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				// Two devices: the chain a node verifies has two links.
				phone, laptop := newKeys(b), newKeys(b)
				g, _ := e2ee.NewGenesis(phone, time.Now())
				set, _ := ident.VerifyChain(g.UserID(), []ident.Link{g})
				req, _ := e2ee.NewAddDeviceRequest(set.Head(), laptop)
				add, _ := e2ee.NewAddDevice(set, phone, req, time.Now())
				rec := attestedRecord(b, nodeKey(b), keyregistry.KindOIDC, g, add)
				if err := nw.Nodes[0].Host().DHT().PutValue(ctx, keyregistry.RecordKey(g.UserID()), rec); err != nil {
					b.Errorf("put: %v", err)
				}
				users[i] = g.UserID()
			})
		}
		wg.Wait()
		return users
	}
	lookup := func(i int, user ident.UserID) time.Duration {
		url := nw.Nodes[1+i%9].APIURL()
		t0 := time.Now()
		var u api.UserResponse
		if st, code := call(b, "GET", url+"/v1/users/"+user.String(), nil, &u); st != 200 {
			b.Fatalf("lookup: %d %s", st, code)
		}
		d := time.Since(t0)
		if _, _, err := ident.DecodeChain(user, u.Links); err != nil || u.Version != 2 {
			b.Fatalf("chain: version %d, %v", u.Version, err)
		}
		return d
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(p(0.50), "p50-ms")
		b.ReportMetric(p(0.99), "p99-ms")
		b.ReportMetric(p(1), "max-ms")
		b.ReportMetric(0, "ns/op")
	}
	var users []ident.UserID
	b.Run("cold", func(b *testing.B) {
		users = prepare(b.N)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			lat = append(lat, lookup(i, users[i]))
		}
		b.StopTimer()
		report(b, lat)
	})
	b.Run("cached", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			lat = append(lat, lookup(i, users[i%len(users)]))
		}
		report(b, lat)
	})
}
