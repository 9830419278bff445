package p2p_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/p2p"
)

const scoreTopic = "/volo/score-test/1"

// startHost is a started p2p host on loopback, stopped at the end.
func startHost(t *testing.T) *p2p.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p2p.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Resources.MaxMemoryMB = 256
	h, err := p2p.New(cfg, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop() })
	return h
}

// rawPublisher is a bare libp2p host with gossipsub (no validators, no
// scoring) in scoreTopic, connected to node.
func rawPublisher(t *testing.T, node *p2p.Host) (host.Host, *pubsub.Topic) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ps, err := pubsub.NewGossipSub(t.Context(), h, pubsub.WithFloodPublish(true))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(scoreTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(t.Context(), peer.AddrInfo{ID: node.ID(), Addrs: node.Libp2p().Addrs()}); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, time.Minute, func() error {
		if !slices.Contains(topic.ListPeers(), node.ID()) {
			return fmt.Errorf("the node never joined the topic")
		}
		return nil
	})
	return h, topic
}

// TestPeerScoringGraylistsInvalidPublishers: a peer that publishes
// messages the topic validator refuses falls below the graylist
// threshold; a peer that publishes valid messages scores positive.
func TestPeerScoringGraylistsInvalidPublishers(t *testing.T) {
	node := startHost(t)
	err := node.PubSub().RegisterTopicValidator(scoreTopic, func(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if bytes.HasPrefix(m.GetData(), []byte("ok:")) {
			return pubsub.ValidationAccept
		}
		return pubsub.ValidationReject
	})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := node.Topic(scoreTopic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	honest, honestTopic := rawPublisher(t, node)
	bad, badTopic := rawPublisher(t, node)

	// Five invalid messages cost 5² × 100 = 2500, the graylist threshold;
	// six go below it.
	for i := range 6 {
		if err := badTopic.Publish(t.Context(), fmt.Appendf(nil, "forged %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := honestTopic.Publish(t.Context(), fmt.Appendf(nil, "ok: %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	tstest.WaitFor(t, time.Minute, func() error {
		s := node.PeerScores()
		if s[bad.ID()] >= p2p.ScoreGraylistThreshold {
			return fmt.Errorf("invalid publisher scores %.1f, not below the graylist threshold %d", s[bad.ID()], p2p.ScoreGraylistThreshold)
		}
		if s[honest.ID()] <= 0 {
			return fmt.Errorf("honest publisher scores %.1f, want positive", s[honest.ID()])
		}
		return nil
	})
	// The honest peer's messages were delivered.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for range 3 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.ReceivedFrom != honest.ID() {
			t.Fatalf("delivered a message from %s", m.ReceivedFrom)
		}
	}
}
