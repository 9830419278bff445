// Package devnet is an embedded, single-producer Cardano node for
// development and tests: chain/cardano and gouroboros clients talk to it
// over the real Ouroboros mini-protocols without knowing it is a devnet.
//
// What it is. On a unix socket (Dir/node.socket) it answers node-to-client
// connections: handshake, ChainSync with full blocks, LocalTxSubmission,
// LocalStateQuery (current era, era history, chain point, chain block
// number, system start, epoch number, protocol parameters, UTxO by address
// and by input, whole UTxO) and keep-alive; on an optional TCP address it
// answers node-to-node connections: handshake, ChainSync with headers,
// BlockFetch and keep-alive. The network magic is 42 (network ID 0:
// testnet addresses). The chain is Conway only, one slot a second, with
// mainnet's fee constants (min_fee_a 44, min_fee_b 155381, max_tx_size
// 16384) and other mainnet-like Conway parameters. Blocks are real Conway
// block CBOR: header hash = point hash, block numbers from 1 (0 never
// names a block), previous hash chained, body hash and size computed as
// Cardano does, and each transaction's body, witness set and auxiliary
// data carried exactly as submitted. Header fields only a real stake pool
// can fill (VRF and KES material) are deterministic filler of the right
// sizes; the operational certificate is signed by the devnet's key.
//
// What it checks. A submitted transaction is decoded by gouroboros and
// checked with gouroboros's own Conway rules: inputs present and unspent
// (in the chain or the mempool), no duplicates, validity interval against
// the slot of the next block, size against max_tx_size, auxiliary data
// hash and metadata limits (strings and byte strings at most 64 bytes),
// fee against the minimum for its size, value conserved, outputs above the
// minimum UTxO value and below the maximum value size, network IDs, and
// every required vkey witness present with an Ed25519 signature over the
// body hash that verifies. A refused transaction gets a LocalTxSubmission
// reject whose reason is readable text.
//
// What it does not do. No scripts, datums, native assets, certificates,
// withdrawals, collateral or governance: such transactions are refused.
// No consensus, no stake pools, no epochs beyond their numbering, no
// peers: it makes every block itself, on a timer (Config.BlockInterval)
// or when MakeBlock is called. LocalStateQuery answers from the current
// state whatever point was acquired.
//
// Persistence. The payment key (Dir/payment.skey, cardano-cli format,
// funded at genesis) and the chain (Dir/chain.cbor: a genesis record then
// every block, appended as made and truncated on Rollback) survive
// restarts; the UTxO set is rebuilt by replaying the chain. The mempool
// does not survive a restart.
package devnet

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	ouroboros "github.com/blinklabs-io/gouroboros"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/protocol/blockfetch"
	"github.com/blinklabs-io/gouroboros/protocol/chainsync"
	"github.com/blinklabs-io/gouroboros/protocol/keepalive"
	"github.com/blinklabs-io/gouroboros/protocol/localstatequery"
	"github.com/blinklabs-io/gouroboros/protocol/localtxsubmission"
	"github.com/blinklabs-io/gouroboros/protocol/txsubmission"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
)

// Magic is the devnet's network magic.
const Magic = 42

// Limits and defaults.
const (
	// DefaultFundLovelace is what each funded address gets at genesis.
	DefaultFundLovelace = 1_000_000_000_000
	// MaxMempool is the most transactions waiting for a block.
	MaxMempool = 1000
	// HandshakeTimeout bounds a connection's handshake.
	HandshakeTimeout = 10 * time.Second
	// maxSocketPath is the longest unix socket path the kernel takes.
	maxSocketPath = 107
)

// File names in Config.Dir.
const (
	socketName = "node.socket"
	keyName    = "payment.skey"
	chainName  = "chain.cbor"
)

// ErrRollback is returned by Rollback for a depth the chain does not have.
var ErrRollback = errors.New("devnet: cannot roll back that far")

// Config configures a Devnet.
type Config struct {
	Dir           string        // where the key, socket and chain live (the node passes <data_dir>/devnet)
	BlockInterval time.Duration // 0: blocks only made by MakeBlock (tests)
	// IdleBlocks: after this many empty blocks in a row the timer makes no
	// more until a transaction arrives, so an idle devnet does not grow its
	// chain (and chain.cbor) forever. 0: never pause.
	IdleBlocks    int
	NodeToNode    string   // optional TCP listen address "127.0.0.1:0"; empty: none
	FundAddresses []string // bech32 addresses funded at genesis besides the devnet's own key
	FundLovelace  uint64   // per funded address; default DefaultFundLovelace
}

// Devnet is the embedded node. Build it with New, then Start and Stop.
type Devnet struct {
	cfg  Config
	log  *slog.Logger
	key  ed25519.PrivateKey
	addr common.Address
	now  func() time.Time

	mu          sync.Mutex
	systemStart time.Time
	ledger      *ledger
	blocks      []*block
	mempool     []*ledgerTx
	store       *store
	followers   map[*follower]struct{}
	conns       map[net.Conn]*ouroboros.Connection // nil value: still in handshake
	stopped     bool

	listeners []net.Listener
	n2nAddr   string
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New opens the devnet in cfg.Dir: it generates and saves the payment key
// on first use, builds the genesis UTxO set and replays the stored chain.
// It serves nothing until Start.
func New(cfg Config, log *slog.Logger) (*Devnet, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("devnet: no directory")
	}
	if cfg.FundLovelace == 0 {
		cfg.FundLovelace = DefaultFundLovelace
	}
	if cfg.IdleBlocks < 0 {
		return nil, fmt.Errorf("devnet: negative idle block count %d", cfg.IdleBlocks)
	}
	if cfg.BlockInterval < 0 {
		return nil, fmt.Errorf("devnet: negative block interval %s", cfg.BlockInterval)
	}
	if n := len(filepath.Join(cfg.Dir, socketName)); n > maxSocketPath {
		return nil, fmt.Errorf("devnet: socket path %s is %d bytes, unix sockets take at most %d", filepath.Join(cfg.Dir, socketName), n, maxSocketPath)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("devnet: %w", err)
	}
	d := &Devnet{
		cfg:       cfg,
		log:       log,
		now:       time.Now,
		followers: make(map[*follower]struct{}),
		conns:     make(map[net.Conn]*ouroboros.Connection),
	}
	if err := d.loadKey(); err != nil {
		return nil, err
	}
	genesis, err := d.genesis()
	if err != nil {
		return nil, err
	}
	d.ledger = newLedger(uint(cardano.Devnet.ID), genesis)
	if err := d.openChain(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Devnet) loadKey() error {
	path := d.KeyFile()
	k, err := cardano.ReadSigningKey(path)
	if errors.Is(err, os.ErrNotExist) {
		if k, err = cardano.GenerateSigningKey(); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		if err = cardano.WriteSigningKey(path, k); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		d.log.Info("devnet: payment key generated", "file", path)
	}
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	d.key = k
	d.addr, err = cardano.EnterpriseAddress(k.Public().(ed25519.PublicKey), cardano.Devnet)
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	return nil
}

// genesis is the initial UTxO set: the devnet's own address and every
// FundAddresses entry (each once), FundLovelace each.
func (d *Devnet) genesis() ([]utxoEntry, error) {
	addrs := []common.Address{d.addr}
	seen := map[string]bool{d.addr.String(): true}
	for _, s := range d.cfg.FundAddresses {
		a, err := common.NewAddress(s)
		if err != nil {
			return nil, fmt.Errorf("devnet: fund address %q: %w", s, err)
		}
		if a.NetworkId() != uint(cardano.Devnet.ID) {
			return nil, fmt.Errorf("devnet: fund address %s is for network %d, the devnet is network %d", s, a.NetworkId(), cardano.Devnet.ID)
		}
		if !seen[a.String()] {
			seen[a.String()] = true
			addrs = append(addrs, a)
		}
	}
	out := make([]utxoEntry, 0, len(addrs))
	for _, a := range addrs {
		e, err := genesisOutput(a, d.cfg.FundLovelace)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Start listens on the socket (and the node-to-node address, if any) and
// starts the block timer.
func (d *Devnet) Start(ctx context.Context) error {
	path := d.SocketPath()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("devnet: remove stale socket: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("devnet: listen on %s: %w", path, err)
	}
	d.listeners = append(d.listeners, ln)
	if d.cfg.NodeToNode != "" {
		tcp, err := lc.Listen(ctx, "tcp", d.cfg.NodeToNode)
		if err != nil {
			ln.Close()
			return fmt.Errorf("devnet: listen on %s: %w", d.cfg.NodeToNode, err)
		}
		d.listeners = append(d.listeners, tcp)
		d.n2nAddr = tcp.Addr().String()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for i, l := range d.listeners {
		d.wg.Go(func() { d.accept(l, i == 1) })
	}
	if d.cfg.BlockInterval > 0 {
		d.wg.Go(func() { d.runBlocks(runCtx) })
	}
	tip := d.Tip()
	d.log.Info("devnet: started", "socket", path, "node_to_node", d.n2nAddr, "magic", Magic,
		"address", d.addr.String(), "tip", tip.Point.String(), "block_interval", d.cfg.BlockInterval)
	return nil
}

// Stop closes every connection and listener and stops the block timer.
func (d *Devnet) Stop() error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	conns := make(map[net.Conn]*ouroboros.Connection, len(d.conns))
	for c, oc := range d.conns {
		conns[c] = oc
	}
	d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
	}
	for _, l := range d.listeners {
		l.Close()
	}
	for c, oc := range conns {
		if oc != nil {
			oc.Close()
		}
		c.Close()
	}
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.store != nil {
		if err := d.store.close(); err != nil {
			return err
		}
		d.store = nil
	}
	d.log.Info("devnet: stopped")
	return nil
}

// SocketPath is the node-to-client unix socket.
func (d *Devnet) SocketPath() string { return filepath.Join(d.cfg.Dir, socketName) }

// NodeToNodeAddr is the node-to-node TCP address, "" when not listening.
func (d *Devnet) NodeToNodeAddr() string { return d.n2nAddr }

// KeyFile is the funded payment key, cardano-cli format.
func (d *Devnet) KeyFile() string { return filepath.Join(d.cfg.Dir, keyName) }

// Magic is the network magic, 42.
func (d *Devnet) Magic() uint32 { return Magic }

// Address is the enterprise address of the devnet's payment key.
func (d *Devnet) Address() common.Address { return d.addr }

// Tip is the newest block.
func (d *Devnet) Tip() chain.Tip {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tipLocked()
}

func (d *Devnet) tipLocked() chain.Tip {
	if len(d.blocks) == 0 {
		return chain.Tip{}
	}
	b := d.blocks[len(d.blocks)-1]
	return chain.Tip{Point: b.point(), BlockNo: b.number}
}

// slotAt is the slot that holds t.
func (d *Devnet) slotAt(t time.Time) uint64 {
	if t.Before(d.systemStart) {
		return 0
	}
	return uint64(t.Sub(d.systemStart) / SlotLength)
}

// nextSlotLocked is the slot of the next block: the current slot, or the
// one after the tip's when blocks are made faster than one a slot.
func (d *Devnet) nextSlotLocked() uint64 {
	s := d.slotAt(d.now())
	if len(d.blocks) > 0 {
		s = max(s, d.blocks[len(d.blocks)-1].slot+1)
	}
	return s
}

func (d *Devnet) runBlocks(ctx context.Context) {
	t := time.NewTicker(d.cfg.BlockInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !d.idle() {
				d.MakeBlock()
			}
		}
	}
}

// idle reports whether the timer should skip a block: the mempool is empty
// and the newest IdleBlocks blocks are all empty.
func (d *Devnet) idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.cfg.IdleBlocks
	if n <= 0 || len(d.mempool) > 0 || len(d.blocks) < n {
		return false
	}
	for _, b := range d.blocks[len(d.blocks)-n:] {
		if len(b.txs) > 0 {
			return false
		}
	}
	return true
}

// MakeBlock makes a block now with the mempool's transactions (as many
// as fit in a block body; it may be empty) and returns its point.
func (d *Devnet) MakeBlock() chain.Point {
	d.mu.Lock()
	defer d.mu.Unlock()
	size, n := 0, 0
	for _, tx := range d.mempool {
		txSize := len(tx.body) + len(tx.witness) + len(tx.aux) + 16
		if size+txSize > MaxBlockBody-64 {
			break
		}
		size += txSize
		n++
	}
	txs := d.mempool[:n:n]
	var prev []byte
	number := uint64(1)
	if len(d.blocks) > 0 {
		last := d.blocks[len(d.blocks)-1]
		prev, number = last.hash[:], last.number+1
	}
	b, err := makeBlock(d.key, number, d.nextSlotLocked(), prev, txs)
	if err != nil {
		d.log.Error("devnet: make block", "err", err)
		return d.tipLocked().Point
	}
	if d.store != nil {
		if err := d.store.append(b); err != nil {
			d.log.Error("devnet: save block", "block", b.number, "err", err)
		}
	}
	d.blocks = append(d.blocks, b)
	d.mempool = d.mempool[n:]
	level := slog.LevelInfo
	if len(txs) == 0 {
		level = slog.LevelDebug // an empty block a second is noise at info
	}
	d.log.Log(context.Background(), level, "devnet: block made", "block", b.number, "slot", b.slot, "hash", fmt.Sprintf("%x", b.hash), "txs", len(txs), "size", len(b.raw))
	for f := range d.followers {
		f.blockAdded()
	}
	return b.point()
}

// Rollback drops the newest n blocks. Their transactions are discarded,
// not returned to the mempool; the UTxO set reverts; the mempool keeps
// the transactions still valid on the shorter chain; followers are rolled
// back.
func (d *Devnet) Rollback(n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n < 0 || n > len(d.blocks) {
		return fmt.Errorf("%w: %d blocks asked, the chain has %d", ErrRollback, n, len(d.blocks))
	}
	if n == 0 {
		return nil
	}
	keep := len(d.blocks) - n
	if d.store != nil {
		if err := d.store.truncate(keep); err != nil {
			return err
		}
	}
	dropped := 0
	for _, b := range d.blocks[keep:] {
		dropped += len(b.txs)
	}
	d.blocks = d.blocks[:keep:keep]
	d.ledger.reset()
	for _, b := range d.blocks {
		for _, tx := range b.txs {
			d.ledger.apply(tx)
		}
	}
	pending := d.mempool
	d.mempool = nil
	slot := d.nextSlotLocked()
	for _, tx := range pending {
		if err := d.ledger.validate(tx, slot); err != nil {
			d.log.Info("devnet: mempool transaction dropped after rollback", "tx", fmt.Sprintf("%x", tx.id), "reason", err)
			continue
		}
		d.ledger.apply(tx)
		d.mempool = append(d.mempool, tx)
	}
	tip := d.tipLocked()
	d.log.Info("devnet: rolled back", "blocks", n, "txs_discarded", dropped, "tip", tip.Point.String())
	for f := range d.followers {
		f.rolledBack(uint64(keep))
	}
	return nil
}

// submit validates a submitted transaction and puts it in the mempool.
// Every refusal wraps ErrRefused and says why.
func (d *Devnet) submit(era uint16, raw []byte) (chain.TxID, error) {
	if era != eraIDConway {
		return chain.TxID{}, fmt.Errorf("%w: the devnet takes Conway transactions (era %d), not era %d", ErrRefused, eraIDConway, era)
	}
	tx, err := decodeTx(raw)
	if err != nil {
		return chain.TxID{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.mempool) >= MaxMempool {
		return tx.id, fmt.Errorf("%w: the mempool is full (%d transactions)", ErrRefused, MaxMempool)
	}
	if err := d.ledger.validate(tx, d.nextSlotLocked()); err != nil {
		return tx.id, err
	}
	d.ledger.apply(tx)
	d.mempool = append(d.mempool, tx)
	return tx.id, nil
}

func (d *Devnet) submitTx(_ localtxsubmission.CallbackContext, m localtxsubmission.MsgSubmitTxTransaction) error {
	raw, ok := m.Raw.Content.([]byte)
	if !ok {
		err := fmt.Errorf("%w: the transaction is not wrapped CBOR bytes", ErrRefused)
		d.log.Info("devnet: transaction refused", "reason", err)
		return err
	}
	id, err := d.submit(m.EraId, raw)
	if err != nil {
		d.log.Info("devnet: transaction refused", "tx", id.String(), "reason", err)
		return err
	}
	d.log.Info("devnet: transaction accepted", "tx", id.String(), "size", len(raw))
	return nil
}

func (d *Devnet) accept(l net.Listener, nodeToNode bool) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			c.Close()
			return
		}
		d.conns[c] = nil
		d.mu.Unlock()
		d.wg.Go(func() { d.serve(c, nodeToNode) })
	}
}

// serve runs one connection until it ends.
func (d *Devnet) serve(c net.Conn, nodeToNode bool) {
	defer func() {
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
		c.Close()
	}()
	f := &follower{d: d}
	opts := []ouroboros.ConnectionOptionFunc{
		ouroboros.WithConnection(c),
		ouroboros.WithServer(true),
		ouroboros.WithNetworkMagic(Magic),
		ouroboros.WithNodeToNode(nodeToNode),
		ouroboros.WithChainSyncConfig(chainsync.NewConfig(
			chainsync.WithFindIntersectFunc(f.findIntersect),
			chainsync.WithRequestNextFunc(f.requestNext),
		)),
		ouroboros.WithKeepAliveConfig(keepalive.NewConfig()),
	}
	if nodeToNode {
		bf, err := blockfetch.NewConfig(blockfetch.WithRequestRangeFunc(d.requestRange))
		if err != nil {
			d.log.Error("devnet: block-fetch config", "err", err)
			return
		}
		opts = append(opts,
			ouroboros.WithBlockFetchConfig(bf),
			// The devnet takes transactions over LocalTxSubmission only; a
			// peer's tx-submission client is let in and never asked.
			ouroboros.WithTxSubmissionConfig(txsubmission.NewConfig(txsubmission.WithInitFunc(func(txsubmission.CallbackContext) error { return nil }))),
		)
	} else {
		opts = append(opts,
			ouroboros.WithLocalTxSubmissionConfig(localtxsubmission.NewConfig(localtxsubmission.WithSubmitTxFunc(d.submitTx))),
			ouroboros.WithLocalStateQueryConfig(localstatequery.NewConfig(
				localstatequery.WithAcquireFunc(d.acquire),
				localstatequery.WithQueryFunc(d.query),
				localstatequery.WithReleaseFunc(func(localstatequery.CallbackContext) error { return nil }),
			)),
			// A local client may leave a connection idle as long as it likes.
			ouroboros.WithMuxerSegmentReadTimeout(0),
		)
	}
	c.SetDeadline(d.now().Add(HandshakeTimeout))
	oc, err := ouroboros.NewConnection(opts...)
	if err != nil {
		d.log.Info("devnet: connection refused", "node_to_node", nodeToNode, "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		oc.Close()
		return
	}
	d.conns[c] = oc
	d.mu.Unlock()
	d.log.Debug("devnet: connection", "node_to_node", nodeToNode)
	for err := range oc.ErrorChan() {
		d.log.Debug("devnet: connection ended", "node_to_node", nodeToNode, "err", err)
	}
	d.mu.Lock()
	f.closed = true
	delete(d.followers, f)
	d.mu.Unlock()
}
