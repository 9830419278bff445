package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

func newBenchCmd(f *flags, stdout, stderr io.Writer) *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Measure a local network of nodes",
	}
	var o relayBenchOptions
	relayCmd := &cobra.Command{
		Use:   "relay",
		Short: "Durable envelopes/s through one node, and online delivery latency across two",
		Long: `bench relay starts a devnet of -n nodes in this process (data in a
temporary directory unless --data-dir is given, free ports) and measures:

  1. durable writes: --senders goroutines send envelopes of --size bytes
     through node 0 for --duration; an envelope counts once the write
     quorum of its k relays has it on disk (fsync before the answer);
  2. online delivery: a device subscribed through node 1 receives
     envelopes sent through node 0 at --rate per second for --duration;
     it reports the latency from send to delivery, p50 and p99.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, *f)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("data-dir") {
				dir, err := os.MkdirTemp("", "volo-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cfg.DataDir = dir
			}
			if !cmd.Flags().Changed("api-listen") {
				cfg.API.Listen = "127.0.0.1:0"
			}
			if !cmd.Flags().Changed("p2p-listen") {
				cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
			}
			if !cmd.Flags().Changed("log-level") {
				cfg.Log.Level = "warn"
			}
			return benchRelay(cmd.Context(), cfg, o, stdout, newLogger(cfg, stderr))
		},
	}
	fl := relayCmd.Flags()
	fl.IntVarP(&o.nodes, "nodes", "n", 3, "nodes in the devnet (at least 2)")
	fl.IntVar(&o.senders, "senders", 64, "concurrent senders in the durable-write phase")
	fl.IntVar(&o.size, "size", 1024, "ciphertext bytes per envelope")
	fl.DurationVar(&o.duration, "duration", 10*time.Second, "length of each phase")
	fl.IntVar(&o.rate, "rate", 1000, "envelopes per second in the latency phase")
	bench.AddCommand(relayCmd)
	return bench
}

type relayBenchOptions struct {
	nodes, senders, size, rate int
	duration                   time.Duration
}

func benchRelay(ctx context.Context, cfg node.Config, o relayBenchOptions, w io.Writer, log *slog.Logger) error {
	if o.nodes < 2 || o.senders < 1 || o.size < 1 || o.size > wire.MaxCiphertextSize || o.rate < 1 || o.duration <= 0 {
		return errors.New("bench relay: need -n >= 2, --senders >= 1, 1 <= --size <= wire.MaxCiphertextSize, --rate >= 1, --duration > 0")
	}
	nodes, err := startDevnet(ctx, cfg, o.nodes, log)
	if err != nil {
		return err
	}
	defer stopAll(nodes)
	k := min(cfg.Relay.Replicas, o.nodes)
	if err := waitRelays(ctx, nodes, k); err != nil {
		return err
	}
	fmt.Fprintf(w, "devnet: %d nodes, k=%d, write quorum %d, sync writes %v, envelope %d B\n",
		o.nodes, k, min(cfg.Relay.WriteQuorum, k), cfg.Store.SyncWrites, o.size)

	n, elapsed, err := benchDurable(ctx, nodes, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "durable writes through node 0: %d envelopes in %s = %.0f envelopes/s (%d senders)\n",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), o.senders)

	lat, err := benchLatency(ctx, nodes[0], nodes[1], o)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "online delivery node 0 -> node 1 at %d/s: %d envelopes, p50 %s, p99 %s, max %s\n",
		o.rate, len(lat), pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1))
	return nil
}

// waitRelays waits until every node sees k relays for a probe device:
// identify has told it which peers speak the relay protocol.
func waitRelays(ctx context.Context, nodes []*node.Node, k int) error {
	probe, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, devnetSettle)
	defer cancel()
	for i, nd := range nodes {
		for {
			peers, err := nd.Relay().Relays(ctx, probe.ID())
			if err == nil && len(peers) >= k {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("bench: node %d sees %d relays, want %d", i, len(peers), k)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// benchDurable sends through the first of nodes from o.senders
// goroutines, one envelope per call, to 1000 devices, and counts the
// envelopes a quorum stored. The envelopes carry their devices' delivery
// keys, as a contact's do; each device's subscribe token registered its
// verifier with every node, as its subscriptions would.
func benchDurable(ctx context.Context, nodes []*node.Node, o relayBenchOptions) (int64, time.Duration, error) {
	nd := nodes[0]
	devices := make([]ident.DeviceID, 1000)
	keys := make([][]byte, len(devices))
	for i := range devices {
		k, err := e2ee.GenerateDeviceKeys(rand.Reader)
		if err != nil {
			return 0, 0, err
		}
		devices[i] = k.ID()
		keys[i] = make([]byte, wire.DeliveryVerifierSize)
		rand.Read(keys[i])
		tok := wire.NewSubscribeToken(k, nd.PeerID().String(), time.Now(), wire.DeliveryVerifier(keys[i]))
		for _, n := range nodes {
			if err := n.Relay().Local().Register(ctx, tok); err != nil {
				return 0, 0, err
			}
		}
	}
	body := make([]byte, o.size)
	rand.Read(body)
	var stored atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for s := range o.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := s; ctx.Err() == nil; i += o.senders {
				d := i % len(devices)
				e := wire.Envelope{To: devices[d], ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: body, Delivery: keys[d]}
				res, err := nd.Relay().Send(ctx, []wire.Envelope{e})
				if ctx.Err() != nil {
					return
				}
				if err == nil && res[0].Err != nil {
					err = res[0].Err
				}
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				stored.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, 0, fmt.Errorf("bench: send: %w", firstErr)
	}
	return stored.Load(), elapsed, nil
}

// benchLatency subscribes a device through to and sends to it through from
// at o.rate per second, timing each envelope from the send call to its
// delivery. The device acknowledges what it receives, as a client would.
func benchLatency(ctx context.Context, from, to *node.Node, o relayBenchOptions) ([]time.Duration, error) {
	dev, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		return nil, err
	}
	key := make([]byte, wire.DeliveryVerifierSize)
	rand.Read(key)
	var mu sync.Mutex
	sent := make(map[wire.EnvelopeID]time.Time)
	var lat []time.Duration
	var toAck []wire.EnvelopeRef
	sctx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	subDone := make(chan error, 1)
	go func() {
		tok := wire.NewSubscribeToken(dev, to.PeerID().String(), time.Now(), wire.DeliveryVerifier(key))
		subDone <- to.Relay().Subscribe(sctx, func() wire.SubscribeToken { return tok }, func(envs []wire.Envelope) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, e := range envs {
				if t, ok := sent[e.ID]; ok {
					lat = append(lat, now.Sub(t))
					delete(sent, e.ID)
					toAck = append(toAck, e.Ref())
				}
			}
		})
	}()
	// A first envelope makes sure the subscription is live before timing.
	warm := wire.Envelope{To: dev.ID(), ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: []byte("warm-up"), Delivery: key}
	mu.Lock()
	sent[warm.ID] = time.Now()
	mu.Unlock()
	if _, err := from.Relay().Send(ctx, []wire.Envelope{warm}); err != nil {
		return nil, err
	}
	for {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n == 1 {
			break
		}
		select {
		case err := <-subDone:
			return nil, fmt.Errorf("bench: subscribe: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()

	body := make([]byte, o.size)
	rand.Read(body)
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	defer tick.Stop()
	end := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	var sendErr atomic.Value
	for time.Now().Before(end) {
		<-tick.C
		e := wire.Envelope{To: dev.ID(), ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: body, Delivery: key}
		mu.Lock()
		sent[e.ID] = time.Now()
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := from.Relay().Send(ctx, []wire.Envelope{e}); err != nil || res[0].Err != nil {
				sendErr.CompareAndSwap(nil, fmt.Sprint(err, res))
			}
		}()
		if mu.TryLock() {
			if len(toAck) >= 256 {
				ids := toAck
				toAck = nil
				go to.Relay().Ack(ctx, dev.Public(), ids, dev.Signing.Sign(wire.DomainAck, wire.AckMessage(dev.ID(), ids)))
			}
			mu.Unlock()
		}
	}
	wg.Wait()
	// Let the last deliveries arrive.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := sendErr.Load(); v != nil {
		return nil, fmt.Errorf("bench: send: %v", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) > 0 {
		return nil, fmt.Errorf("bench: %d envelopes never delivered", len(sent))
	}
	return slices.Clone(lat), nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))].Round(time.Microsecond)
}
