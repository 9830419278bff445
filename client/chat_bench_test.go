package client

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
)

// BenchmarkChatEncryptSeal: what the client does per 1 KiB message for one
// recipient device: encrypt and sign in the session, seal the envelope.
func BenchmarkChatEncryptSeal(b *testing.B) {
	ka, _ := e2ee.GenerateDeviceKeys(rand.Reader)
	kb, _ := e2ee.GenerateDeviceKeys(rand.Reader)
	ga, _ := e2ee.NewGenesis(ka, time.Now())
	gb, _ := e2ee.NewGenesis(kb, time.Now())
	sa, _ := ident.VerifyChain(ga.UserID(), []ident.Link{ga})
	sb, _ := ident.VerifyChain(gb.UserID(), []ident.Link{gb})
	sets := []ident.DeviceSet{sa, sb}
	s, err := e2ee.NewSenderSession(ka, ga.UserID(), e2ee.DirectConversationID(ga.UserID(), gb.UserID()), sets, time.Now(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e2ee.NewKeyBundle(s, ka, sets); err != nil {
		b.Fatal(err)
	}
	text := make([]byte, 1024)
	to := kb.Public()
	for b.Loop() {
		if s.Sent() == 1<<31 {
			b.Fatal("session exhausted")
		}
		msg, err := s.Encrypt(ka.Signing, text)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e2ee.SealEnvelope(to, e2ee.EnvelopeMessage, ga.UserID(), msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkChatDeliveryLatency: Alice on node 0 sends to Bob, online on
// node 1, at a fixed rate (below the node's per-device send rate); the
// latency is from Alice's send call to Bob's chat reporting the message
// (sealed, placed on a relay quorum, pushed, opened, stored with fsync).
func BenchmarkChatDeliveryLatency(b *testing.B) {
	const rate = 200 // messages per second
	nw := testnet.New(b, 2)
	passA, passB := []byte("a"), []byte("b")
	mk := func(url string, pass []byte) (*Client, Identity) {
		c, err := New(Options{Home: b.TempDir() + "/home", Node: url, KDF: testKDF})
		if err != nil {
			b.Fatal(err)
		}
		id, err := c.Register(b.Context(), "", nil, pass)
		if err != nil {
			b.Fatal(err)
		}
		return c, id
	}
	alice, _ := mk(nw.Nodes[0].APIURL(), passA)
	bob, idB := mk(nw.Nodes[1].APIURL(), passB)
	chA, err := alice.OpenChat(passA)
	if err != nil {
		b.Fatal(err)
	}
	chB, err := bob.OpenChat(passB)
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	got := make(chan struct{}, 1<<16)
	chB.OnMessage(func(m ChatMessage) {
		now := time.Now()
		mu.Lock()
		lat = append(lat, now.Sub(sent[m.Text]))
		mu.Unlock()
		got <- struct{}{}
	})
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	for _, ch := range []*Chat{chA, chB} {
		wg.Go(func() { ch.Run(ctx) })
	}
	defer func() { cancel(); wg.Wait(); chA.Close(); chB.Close() }()
	tstest.WaitFor(b, e2eTimeout, func() error {
		_, _, err := chA.SendAsync(ctx, idB.User, "warm-up")
		return err
	})
	<-got
	mu.Lock()
	lat = nil
	mu.Unlock()
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		<-tick.C
		text := fmt.Sprintf("m%d", i)
		mu.Lock()
		sent[text] = time.Now()
		mu.Unlock()
		if _, _, err := chA.SendAsync(ctx, idB.User, text); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		select {
		case <-got:
		case <-time.After(e2eTimeout):
			b.Fatal("messages missing")
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(rate, "msgs/s-offered")
}
