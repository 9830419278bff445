package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/node"
)

func TestDevnetThreeNodes(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	nodes, err := startDevnet(t.Context(), cfg, 3, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stopAll(nodes)

	var out bytes.Buffer
	printDevnet(&out, cfg, "", nodes)
	for i, n := range nodes {
		if want := fmt.Sprintf("node-%d  api %s  peer %s", i, n.APIURL(), n.PeerID()); !strings.Contains(out.String(), want) {
			t.Errorf("devnet output lacks %q:\n%s", want, out.String())
		}
		if got := n.Config().DataDir; got != fmt.Sprintf("%s/devnet-3/node-%d", cfg.DataDir, i) {
			t.Errorf("node %d data dir %s", i, got)
		}
	}

	t.Run("routing tables hold the other nodes", func(t *testing.T) {
		for i, n := range nodes {
			rt := n.Host().RoutingTablePeers()
			for j, other := range nodes {
				if i != j && !slices.Contains(rt, other.PeerID()) {
					t.Errorf("node %d's routing table %v lacks node %d (%s)", i, rt, j, other.PeerID())
				}
			}
		}
	})

	t.Run("gossip reaches every node", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		const topic = "/volo/devnet-test/1"
		var subs []chan []byte
		for _, n := range nodes {
			top, err := n.Host().Topic(topic)
			if err != nil {
				t.Fatal(err)
			}
			sub, err := top.Subscribe()
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Cancel()
			ch := make(chan []byte, 16)
			subs = append(subs, ch)
			self := n.PeerID()
			go func() {
				for {
					m, err := sub.Next(ctx)
					if err != nil {
						return
					}
					if m.ReceivedFrom != self {
						ch <- m.Data
					}
				}
			}()
		}
		// Publish once every node has seen the others join the topic.
		for i, n := range nodes {
			top, _ := n.Host().Topic(topic)
			if err := waitTopicPeers(ctx, func() []peer.ID { return top.ListPeers() }, len(nodes)-1); err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		top, _ := nodes[0].Host().Topic(topic)
		if err := top.Publish(ctx, []byte("hello devnet")); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(nodes); i++ {
			select {
			case got := <-subs[i]:
				if string(got) != "hello devnet" {
					t.Errorf("node %d got %q", i, got)
				}
			case <-ctx.Done():
				t.Errorf("node %d never got the message", i)
			}
		}
	})
}

func waitTopicPeers(ctx context.Context, list func() []peer.ID, want int) error {
	for len(list()) < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic has %d peers, want %d", len(list()), want)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func TestDevnetConfigOffsetsPorts(t *testing.T) {
	base := node.DefaultConfig()
	base.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	cfg, err := devnetConfig(base, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/ip4/127.0.0.1/tcp/4003", "/ip4/127.0.0.1/udp/4003/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	if !slices.Equal(cfg.P2P.Listen, want) || cfg.API.Listen != "127.0.0.1:8082" {
		t.Errorf("node 2: listen %v api %s", cfg.P2P.Listen, cfg.API.Listen)
	}
	if base.P2P.Listen[0] != "/ip4/127.0.0.1/tcp/4001" {
		t.Error("devnetConfig changed the base configuration")
	}
}
