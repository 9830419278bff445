package testnet

import (
	"crypto/ed25519"
	"path/filepath"
	"time"

	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/node"
)

// Chain settings of test networks.
const (
	// ChainDepth is the confirmation depth of test networks with a chain.
	ChainDepth = 3
	// ChainBatchInterval is their registry.batch_interval.
	ChainBatchInterval = 200 * time.Millisecond
	// PaymentKeyFile is where nodes 1..n-1 keep their payment key, under
	// their data directory.
	PaymentKeyFile = "payment.skey"
)

type chainSettings struct {
	blockInterval time.Duration
}

// Chain gives the network a Cardano chain: node 0 runs the embedded
// devnet (making a block every blockInterval; 0: only when the test calls
// MakeBlock), speaking node-to-client on its socket and node-to-node on a
// loopback port; nodes 1..n-1 get payment keys in their data directories,
// funded at the devnet's genesis, and anchor through node 0's socket with
// backend cardano. Every node anchors with confirmation depth ChainDepth
// every ChainBatchInterval. Nodes added later have no chain.
func Chain(blockInterval time.Duration) Option {
	return func(s *settings) { s.chain = &chainSettings{blockInterval: blockInterval} }
}

// chainConfigs fills in the chain sections of the network's first
// configurations: keys for the others, node 0's devnet funding them. New
// sets their socket once node 0 runs.
func (nw *Network) chainConfigs(cfgs []node.Config) {
	t := nw.t
	t.Helper()
	for i := range cfgs {
		cfg := &cfgs[i]
		cfg.Chain = node.DefaultChainConfig()
		cfg.Chain.ConfirmationDepth = ChainDepth
		cfg.Registry.BatchInterval = config.Duration(ChainBatchInterval)
		if i == 0 {
			cfg.Chain.Devnet.BlockInterval = config.Duration(nw.s.chain.blockInterval)
			cfg.Chain.Devnet.NodeToNodeListen = "127.0.0.1:0"
			continue
		}
		key, err := cardano.GenerateSigningKey()
		if err != nil {
			t.Fatalf("testnet: node %d payment key: %v", i, err)
		}
		path := filepath.Join(cfg.DataDir, PaymentKeyFile)
		if err := cardano.WriteSigningKey(path, key); err != nil {
			t.Fatalf("testnet: node %d payment key: %v", i, err)
		}
		addr, err := cardano.EnterpriseAddress(key.Public().(ed25519.PublicKey), cardano.Devnet)
		if err != nil {
			t.Fatalf("testnet: node %d address: %v", i, err)
		}
		cfgs[0].Chain.Devnet.FundAddresses = append(cfgs[0].Chain.Devnet.FundAddresses, addr.String())
		cfg.Chain.Backend = node.ChainCardano
		cfg.Chain.Network = cardano.Devnet.Name
		cfg.Chain.PaymentKey = path
	}
}

// Devnet is node 0's embedded devnet, nil when the network has no chain.
func (nw *Network) Devnet() *devnet.Devnet { return nw.Nodes[0].Devnet() }
