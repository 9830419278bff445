package client

import (
	"crypto/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/internal/testnet"
)

// BenchmarkOpenKeys is the cost every signing command pays to decrypt the
// device keys with the default Argon2id parameters (t=3, 64 MiB, p=4).
func BenchmarkOpenKeys(b *testing.B) {
	h, err := OpenHome(filepath.Join(b.TempDir(), "home"), e2ee.DefaultBackupParams())
	if err != nil {
		b.Fatal(err)
	}
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	pass := []byte("benchmark passphrase")
	if err := h.Create(keys, pass, State{User: g.UserID().String(), Device: keys.ID().String(), Chain: [][]byte{g.Encode()}}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := h.Keys(pass); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientLookup measures a verified lookup as the client does it
// (HTTP GET of the chain, decoding and full verification) of a user with
// two devices: once from the node that holds it, once from another node of
// a 3-node network (cached there after the first fetch). It reports p50
// and p99 latencies.
func BenchmarkClientLookup(b *testing.B) {
	nw := testnet.New(b, 3)
	a := newBenchClient(b, nw.Nodes[0].APIURL())
	nb := newBenchClient(b, nw.Nodes[0].APIURL())
	pass := []byte("p")
	id, err := a.Register(b.Context(), "", nil, pass)
	if err != nil {
		b.Fatal(err)
	}
	linkBench(b, a, nb, pass)
	for _, n := range []int{0, 2} {
		c := newBenchClient(b, nw.Nodes[n].APIURL())
		b.Run(map[int]string{0: "home-node", 2: "other-node"}[n], func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				info, err := c.Lookup(b.Context(), id.User)
				lat = append(lat, time.Since(start))
				if err != nil || len(info.Devices) != 2 {
					b.Fatalf("lookup: %+v %v", info, err)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func newBenchClient(b *testing.B, url string) *Client {
	c, err := New(Options{Home: filepath.Join(b.TempDir(), "home"), Node: url, KDF: testKDF})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// linkBench links device nb to a's user.
func linkBench(b *testing.B, a, nb *Client, pass []byte) {
	codes := make(chan string, 1)
	errs := make(chan error, 1)
	go func() {
		_, err := a.LinkShow(b.Context(), pass, func(code e2ee.LinkingCode) error { codes <- code.QR(); return nil })
		errs <- err
	}()
	var code string
	select {
	case code = <-codes:
	case err := <-errs:
		b.Fatalf("link show: %v", err)
	}
	if _, err := nb.LinkJoin(b.Context(), code, pass); err != nil {
		b.Fatal(err)
	}
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
