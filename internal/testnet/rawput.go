package testnet

import (
	"context"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/p2p"
)

// RawPut sends value under key to every node of the network from a bare
// libp2p host whose DHT accepts anything: what an attacker who skips the
// sender-side validation can do. Whether each node stores it is up to the
// node's validators, which is what tests that call this check.
func (nw *Network) RawPut(ctx context.Context, key string, value []byte) {
	nw.t.Helper()
	ns, _, err := record.SplitKey(key)
	if err != nil {
		nw.t.Fatalf("testnet: raw put: %v", err)
	}
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		nw.t.Fatal(err)
	}
	defer h.Close()
	client, err := dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(p2p.DHTProtocolPrefix),
		dht.Validator(record.NamespacedValidator{ns: acceptAll{}}))
	if err != nil {
		nw.t.Fatal(err)
	}
	defer client.Close()
	for i, n := range nw.Nodes {
		if err := h.Connect(ctx, peer.AddrInfo{ID: n.PeerID(), Addrs: n.Host().Libp2p().Addrs()}); err != nil {
			nw.t.Fatalf("testnet: raw client: connect node %d: %v", i, err)
		}
	}
	<-client.RefreshRoutingTable()
	// PutValue sends to the closest peers: every node of a small network.
	if err := client.PutValue(ctx, key, value); err != nil {
		nw.t.Logf("testnet: raw put %s: %v", key, err)
	}
}

type acceptAll struct{}

func (acceptAll) Validate(string, []byte) error        { return nil }
func (acceptAll) Select(string, [][]byte) (int, error) { return 0, nil }
