package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/node"
)

// TestBenchRelayRuns runs the relay benchmark command briefly on two nodes:
// it must place envelopes on a quorum and deliver every timed envelope.
func TestBenchRelayRuns(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	var out bytes.Buffer
	o := relayBenchOptions{nodes: 2, senders: 4, size: 256, rate: 50, duration: 300 * time.Millisecond}
	if err := benchRelay(t.Context(), cfg, o, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"k=2, write quorum 2", "durable writes through node 0:", "online delivery node 0 -> node 1 at 50/s:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := benchRelay(t.Context(), cfg, relayBenchOptions{nodes: 1}, &out, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a one-node bench was accepted")
	}
}
