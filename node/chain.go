package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/keyregistry"
)

// Chain backends ([chain] backend).
const (
	// ChainDevnet runs an embedded Cardano devnet (chain/devnet) in the
	// node and anchors on it: development, tests, a machine with no
	// Cardano node.
	ChainDevnet = "devnet"
	// ChainCardano anchors through the operator's cardano-node socket.
	ChainCardano = "cardano"
	// ChainNone anchors nothing: registrations are not anchored.
	ChainNone = "none"
)

// Layout of the data directory for the chain.
const (
	// DevnetDir holds the embedded devnet's key, socket and chain.
	DevnetDir = "devnet"
	// AnchorStateFile remembers the node's last anchor transaction.
	AnchorStateFile = "anchor-state.cbor"
)

// ChainConfig is the [chain] section: where the node anchors the links it
// accepts.
type ChainConfig struct {
	// Backend is devnet, cardano or none.
	Backend string `toml:"backend"`
	// Network is the Cardano network of backend cardano: mainnet, preprod,
	// preview, or a network magic number. The devnet is always "devnet"
	// (magic 42).
	Network string `toml:"network"`
	// Socket is the cardano-node's node-to-client socket (backend cardano).
	Socket string `toml:"socket"`
	// PaymentKey is the cardano-cli .skey file of the address that pays
	// for the anchors (backend cardano).
	PaymentKey string `toml:"payment_key"`
	// ConfirmationDepth is how deep (in blocks, the anchor's own included)
	// an anchor must be before the node stores its proofs.
	ConfirmationDepth uint64 `toml:"confirmation_depth"`
	// Devnet configures the embedded devnet (backend devnet).
	Devnet DevnetConfig `toml:"devnet"`
}

// DevnetConfig is the [chain.devnet] section.
type DevnetConfig struct {
	// BlockInterval is how often the devnet makes a block.
	BlockInterval config.Duration `toml:"block_interval"`
	// IdleBlocks: after this many empty blocks in a row the devnet makes
	// none until a transaction arrives (an idle node's chain stops
	// growing); 0: never pause.
	IdleBlocks int `toml:"idle_blocks"`
	// NodeToNodeListen is a TCP HOST:PORT on which the devnet also speaks
	// node-to-node (for verifiers using --cardano-relay); empty: none.
	NodeToNodeListen string `toml:"node_to_node_listen"`
	// FundAddresses are bech32 addresses the devnet funds at genesis
	// besides its own key (other nodes' payment addresses).
	FundAddresses []string `toml:"fund_addresses"`
}

// DefaultIdleBlocks is how many empty blocks an idle devnet makes before
// it pauses: well past any confirmation depth a devnet is used with.
const DefaultIdleBlocks = 120

// DefaultChainConfig is the development chain: an embedded devnet making a
// block a second, anchors deep enough at 3 blocks.
func DefaultChainConfig() ChainConfig {
	return ChainConfig{
		Backend:           ChainDevnet,
		Network:           "devnet",
		ConfirmationDepth: 3,
		Devnet:            DevnetConfig{BlockInterval: config.Duration(time.Second), IdleBlocks: DefaultIdleBlocks, FundAddresses: []string{}},
	}
}

// Validate checks every field and names the first bad one.
func (c ChainConfig) Validate() error {
	if !slices.Contains([]string{ChainDevnet, ChainCardano, ChainNone}, c.Backend) {
		return fmt.Errorf("chain.backend: %q is not one of devnet, cardano, none", c.Backend)
	}
	if c.Backend == ChainNone {
		return nil
	}
	if c.ConfirmationDepth < 1 {
		return errors.New("chain.confirmation_depth: must be at least 1")
	}
	switch c.Backend {
	case ChainCardano:
		if _, err := cardano.ParseNetwork(c.Network); err != nil {
			return fmt.Errorf("chain.network: %w", err)
		}
		if c.Socket == "" {
			return errors.New("chain.socket: backend cardano needs the cardano-node socket path")
		}
		if c.PaymentKey == "" {
			return errors.New("chain.payment_key: backend cardano needs a payment .skey file")
		}
	case ChainDevnet:
		if c.Devnet.BlockInterval < 0 {
			return fmt.Errorf("chain.devnet.block_interval: must not be negative, got %s", c.Devnet.BlockInterval)
		}
		if c.Devnet.IdleBlocks < 0 {
			return fmt.Errorf("chain.devnet.idle_blocks: must not be negative, got %d", c.Devnet.IdleBlocks)
		}
	}
	return nil
}

// buildDevnet builds the embedded devnet when chain.backend is devnet:
// the chain step, started before the registry and the anchoring that dial
// it. It opens the devnet's chain file; its Stop closes it.
func (n *Node) buildDevnet() (Lifecycle, error) {
	cc := n.cfg.Chain
	if cc.Backend != ChainDevnet {
		return nil, nil
	}
	d, err := devnet.New(devnet.Config{
		Dir:           filepath.Join(n.cfg.DataDir, DevnetDir),
		BlockInterval: cc.Devnet.BlockInterval.Std(),
		IdleBlocks:    cc.Devnet.IdleBlocks,
		NodeToNode:    cc.Devnet.NodeToNodeListen,
		FundAddresses: cc.Devnet.FundAddresses,
	}, n.log.With("service", "chain", "chain", "devnet"))
	if err != nil {
		return nil, fmt.Errorf("chain: devnet: %w", err)
	}
	n.devnet = d
	return d, nil
}

// buildAnchoring builds the anchoring service (none when chain.backend is
// none) over the devnet the chain step built or the configured
// cardano-node. Its Stop also closes the anchorer's connection.
func (n *Node) buildAnchoring() (Lifecycle, error) {
	cc := n.cfg.Chain
	log := n.log.With("service", "chain")
	if cc.Backend == ChainNone {
		return nil, nil
	}
	socket, keyFile, network := cc.Socket, cc.PaymentKey, cc.Network
	if n.devnet != nil {
		socket, keyFile, network = n.devnet.SocketPath(), n.devnet.KeyFile(), "devnet"
	}
	net, err := cardano.ParseNetwork(network)
	if err != nil {
		return nil, fmt.Errorf("chain.network: %w", err)
	}
	anchorer, err := cardano.NewAnchorer(cardano.AnchorerConfig{
		Socket:    socket,
		Network:   net,
		KeyFile:   keyFile,
		StateFile: filepath.Join(n.cfg.DataDir, AnchorStateFile),
	}, log.With("chain", "anchorer"))
	if err != nil {
		return nil, fmt.Errorf("chain: anchorer: %w", err)
	}
	dial := func(ctx context.Context) (chain.Reader, error) {
		return cardano.DialNodeToClient(ctx, socket, net.Magic)
	}
	a, err := keyregistry.NewAnchoring(keyregistry.AnchoringConfig{
		BatchInterval: n.cfg.Registry.BatchInterval.Std(),
		BatchMaxLinks: n.cfg.Registry.BatchMaxLinks,
		Depth:         cc.ConfirmationDepth,
	}, n.keys, n.anchors, anchorer, dial, n.log.With("service", "anchoring"), n.registry)
	if err != nil {
		return nil, errors.Join(err, anchorer.Close())
	}
	n.anchoring = a
	return lifecycleCloser{a, anchorer.Close}, nil
}

// lifecycleCloser stops svc, then closes what it used.
type lifecycleCloser struct {
	Lifecycle
	close func() error
}

func (l lifecycleCloser) Stop() error { return errors.Join(l.Lifecycle.Stop(), l.close()) }

// logChain says at start-up where the node anchors and how to verify.
func (n *Node) logChain() {
	cc := n.cfg.Chain
	switch {
	case cc.Backend == ChainNone:
		n.log.Warn("registrations are NOT anchored on a chain", "setting", "chain.backend = \"none\"")
	case n.devnet != nil:
		n.log.Info("anchoring on the embedded Cardano devnet",
			"socket", n.devnet.SocketPath(), "node_to_node", n.devnet.NodeToNodeAddr(), "network_magic", n.devnet.Magic(),
			"verify", "volo-node verify --user USER_ID --node-url "+n.PublicURL()+" --cardano-socket "+n.devnet.SocketPath()+" --network devnet --min-depth "+strconv.FormatUint(n.cfg.Chain.ConfirmationDepth, 10))
	default:
		n.log.Info("anchoring on Cardano", "network", cc.Network, "socket", cc.Socket, "depth", cc.ConfirmationDepth)
	}
}

// Devnet returns the embedded devnet, nil unless chain.backend is devnet.
func (n *Node) Devnet() *devnet.Devnet { return n.devnet }

// Anchoring returns the anchoring service, nil when chain.backend is none.
func (n *Node) Anchoring() *keyregistry.Anchoring { return n.anchoring }
