package keyregistry

import (
	"context"
	"errors"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/p2p"
)

// Streams is what the registry uses of the libp2p host: the node's peer
// ID and the streams of BatchProtocol. A libp2p host.Host satisfies it.
type Streams interface {
	ID() peer.ID
	SetStreamHandler(pid protocol.ID, handler network.StreamHandler)
	RemoveStreamHandler(pid protocol.ID)
	NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// DHT is what the registry uses of the DHT: user records read and written
// by key, and the routing table's size (a failed put on a node alone is
// not worth a warning).
type DHT interface {
	GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error)
	PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error
	RoutingTableSize() int
}

// PubSub is what the registry uses of gossipsub: topic validators and the
// node's handle of a topic (joined once per node, shared by its services).
type PubSub interface {
	RegisterTopicValidator(topic string, val any, opts ...pubsub.ValidatorOpt) error
	UnregisterTopicValidator(topic string) error
	Topic(name string) (*pubsub.Topic, error)
}

// RecordValidators is where the registry adds the DHT record validator of
// its namespace. *p2p.Validators satisfies it.
type RecordValidators interface {
	Add(namespace string, v record.Validator) error
}

// Network is the node's p2p layer as the registry uses it. Every field is
// required.
type Network struct {
	Host       Streams
	DHT        DHT
	PubSub     PubSub
	Validators RecordValidators
	// Key is the node's peer key, which registration signs attestations
	// and Anchoring signs anchors with; the peer ID of Host must be its.
	Key crypto.PrivKey
}

func (n Network) check() error {
	if n.Host == nil || n.DHT == nil || n.PubSub == nil || n.Validators == nil || n.Key == nil {
		return errors.New("keyregistry: the network lacks a host, DHT, pubsub, validators or peer key")
	}
	return nil
}

// NetworkOf is the Network of a p2p host. It reads only local state (the
// host's peer key from its peerstore).
func NetworkOf(h *p2p.Host) Network {
	return Network{
		Host:       h.Libp2p(),
		DHT:        hostDHT{h},
		PubSub:     hostPubSub{h},
		Validators: h.Validators(),
		Key:        h.Libp2p().Peerstore().PrivKey(h.ID()),
	}
}

// hostDHT is the DHT of a p2p.Host.
type hostDHT struct{ h *p2p.Host }

func (d hostDHT) GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error) {
	return d.h.DHT().GetValue(ctx, key, opts...)
}

func (d hostDHT) PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error {
	return d.h.DHT().PutValue(ctx, key, value, opts...)
}

func (d hostDHT) RoutingTableSize() int { return d.h.RoutingTableSize() }

// hostPubSub is the gossipsub router of a p2p.Host, with its shared topic
// handles.
type hostPubSub struct{ h *p2p.Host }

func (p hostPubSub) RegisterTopicValidator(topic string, val any, opts ...pubsub.ValidatorOpt) error {
	return p.h.PubSub().RegisterTopicValidator(topic, val, opts...)
}

func (p hostPubSub) UnregisterTopicValidator(topic string) error {
	return p.h.PubSub().UnregisterTopicValidator(topic)
}

func (p hostPubSub) Topic(name string) (*pubsub.Topic, error) { return p.h.Topic(name) }
