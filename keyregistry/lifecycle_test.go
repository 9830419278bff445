package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
)

// calls records the calls made on the fakes of a Network.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, a...))
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// recordingNet is a Network whose every call is recorded and refused.
type recordingNet struct{ calls *calls }

func (n recordingNet) ID() peer.ID { n.calls.add("ID"); return "" }
func (n recordingNet) SetStreamHandler(p protocol.ID, _ network.StreamHandler) {
	n.calls.add("SetStreamHandler %s", p)
}
func (n recordingNet) RemoveStreamHandler(p protocol.ID) { n.calls.add("RemoveStreamHandler %s", p) }
func (n recordingNet) NewStream(_ context.Context, p peer.ID, _ ...protocol.ID) (network.Stream, error) {
	n.calls.add("NewStream %s", p)
	return nil, errors.New("refused")
}
func (n recordingNet) GetValue(_ context.Context, key string, _ ...routing.Option) ([]byte, error) {
	n.calls.add("GetValue %s", key)
	return nil, routing.ErrNotFound
}
func (n recordingNet) PutValue(_ context.Context, key string, _ []byte, _ ...routing.Option) error {
	n.calls.add("PutValue %s", key)
	return errors.New("refused")
}
func (n recordingNet) RoutingTableSize() int { n.calls.add("RoutingTableSize"); return 0 }
func (n recordingNet) RegisterTopicValidator(topic string, _ any, _ ...pubsub.ValidatorOpt) error {
	n.calls.add("RegisterTopicValidator %s", topic)
	return nil
}
func (n recordingNet) UnregisterTopicValidator(topic string) error {
	n.calls.add("UnregisterTopicValidator %s", topic)
	return nil
}
func (n recordingNet) Topic(name string) (*pubsub.Topic, error) {
	n.calls.add("Topic %s", name)
	return nil, errors.New("refused")
}
func (n recordingNet) Add(namespace string, _ record.Validator) error {
	n.calls.add("Add %s", namespace)
	return nil
}

func (n recordingNet) network(t testing.TB) Network {
	return Network{Host: n, DHT: n, PubSub: n, Validators: n, Key: testNodeKey(t)}
}

// New builds without starting a goroutine or using the network: its only
// call on the network is the DHT record validator p2p wants before the
// node starts. (synctest fails the test if a goroutine New started is
// still blocked when the bubble ends.)
func TestNewHasNoSideEffects(t *testing.T) {
	_, view, q := newTestStore(t)
	synctest.Test(t, func(t *testing.T) {
		rec := recordingNet{calls: &calls{}}
		cfg := DefaultConfig()
		cfg.OIDC = []OIDCProvider{{Name: "p", Issuer: "http://127.0.0.1:1/oidc", ClientID: "c"}}
		if _, err := New(cfg, rec.network(t), view, q, func() string { return "http://127.0.0.1:1" }); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := rec.calls.list(), []string{"Add " + Namespace}; !slices.Equal(got, want) {
			t.Fatalf("New called %q on the network, want only %q", got, want)
		}
	})
}

// Stop removes what Start registered on the host: the gossip validators
// (pubsub refuses a second validator on a topic) and the batch protocol.
func TestStopUnregisters(t *testing.T) {
	host := newTestHost(t)
	_, view, q := newTestStore(t)
	s, err := New(DefaultConfig(), NetworkOf(host), view, q, func() string { return "http://127.0.0.1:1" })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	accept := func(context.Context, peer.ID, *pubsub.Message) bool { return true }
	if err := host.PubSub().RegisterTopicValidator(Topic, accept); err == nil {
		t.Fatal("positive control: a second validator on the registry topic was accepted while the service runs")
	}
	if !slices.Contains(host.Libp2p().Mux().Protocols(), BatchProtocol) {
		t.Fatal("positive control: the batch protocol is not served while the service runs")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{Topic, AnchorTopic} {
		if err := host.PubSub().RegisterTopicValidator(topic, accept); err != nil {
			t.Errorf("after Stop the %s validator is still registered: %v", topic, err)
		}
	}
	if slices.Contains(host.Libp2p().Mux().Protocols(), BatchProtocol) {
		t.Error("after Stop the batch protocol is still served")
	}
}

// failingTopic is the PubSub of a host that cannot join one topic.
type failingTopic struct {
	PubSub
	topic string
}

func (f failingTopic) Topic(name string) (*pubsub.Topic, error) {
	if name == f.topic {
		return nil, errors.New("refused")
	}
	return f.PubSub.Topic(name)
}

// A Start that fails undoes what it did: no validator is left on the host.
func TestFailedStartUnwinds(t *testing.T) {
	for _, topic := range []string{Topic, AnchorTopic} {
		t.Run(topic, func(t *testing.T) {
			host := newTestHost(t)
			_, view, q := newTestStore(t)
			net := NetworkOf(host)
			net.PubSub = failingTopic{PubSub: net.PubSub, topic: topic}
			s, err := New(DefaultConfig(), net, view, q, func() string { return "http://127.0.0.1:1" })
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(t.Context()); err == nil {
				t.Fatal("Start succeeded without its topic")
			}
			accept := func(context.Context, peer.ID, *pubsub.Message) bool { return true }
			for _, topic := range []string{Topic, AnchorTopic} {
				if err := host.PubSub().RegisterTopicValidator(topic, accept); err != nil {
					t.Errorf("the failed Start left the %s validator: %v", topic, err)
				}
			}
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
