package devnet

import (
	"crypto/ed25519"
	"log/slog"
	"os"
	"testing"
	"time"

	ouroboros "github.com/blinklabs-io/gouroboros"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	"github.com/blinklabs-io/gouroboros/protocol/chainsync"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"
	"github.com/blinklabs-io/gouroboros/protocol/localstatequery"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/blake2b"
)

// startDevnet starts a devnet in a fresh directory, stopped at cleanup.
func startDevnet(t testing.TB, cfg Config) *Devnet {
	t.Helper()
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "dn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		cfg.Dir = dir
	}
	d, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// dial opens a gouroboros client connection to the devnet, closed at cleanup.
func dial(t testing.TB, network, addr string, magic uint32, opts ...ouroboros.ConnectionOptionFunc) (*ouroboros.Connection, error) {
	t.Helper()
	opts = append([]ouroboros.ConnectionOptionFunc{
		ouroboros.WithNetworkMagic(magic),
		ouroboros.WithNodeToNode(network == "tcp"),
		ouroboros.WithKeepAlive(false),
	}, opts...)
	c, err := ouroboros.NewConnection(opts...)
	if err != nil {
		return nil, err
	}
	if err := c.DialTimeout(network, addr, 10*time.Second); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func dialNtC(t testing.TB, d *Devnet, opts ...ouroboros.ConnectionOptionFunc) *ouroboros.Connection {
	t.Helper()
	opts = append(opts, ouroboros.WithLocalStateQueryConfig(localstatequery.NewConfig(
		localstatequery.WithQueryTimeout(30*time.Second), localstatequery.WithAcquireTimeout(30*time.Second))))
	c, err := dial(t, "unix", d.SocketPath(), Magic, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// follow runs a node-to-client ChainSync from the origin and reports what
// it sees on the returned channel.
type seen struct {
	rollback bool
	slot     uint64
	hash     []byte
	raw      []byte
}

func follow(t testing.TB, d *Devnet, nodeToNode bool) <-chan seen {
	t.Helper()
	ch := make(chan seen, 100)
	cfg := chainsync.NewConfig(
		chainsync.WithRollForwardRawFunc(func(_ chainsync.CallbackContext, _ uint, raw []byte, _ chainsync.Tip) error {
			var s seen
			if nodeToNode {
				// raw is the header: its hash names the block.
				h := blake2b.Sum256(raw)
				s.hash = h[:]
			} else {
				b, err := conway.NewConwayBlockFromCbor(raw)
				if err != nil {
					t.Errorf("follower: block does not decode: %v", err)
					return err
				}
				s.hash, s.slot = b.Hash().Bytes(), b.SlotNumber()
			}
			s.raw = raw
			ch <- s
			return nil
		}),
		chainsync.WithRollBackwardFunc(func(_ chainsync.CallbackContext, p pcommon.Point, _ chainsync.Tip) error {
			ch <- seen{rollback: true, slot: p.Slot, hash: p.Hash}
			return nil
		}),
	)
	var c *ouroboros.Connection
	if nodeToNode {
		var err error
		if c, err = dial(t, "tcp", d.NodeToNodeAddr(), Magic, ouroboros.WithChainSyncConfig(cfg)); err != nil {
			t.Fatal(err)
		}
	} else {
		c = dialNtC(t, d, ouroboros.WithChainSyncConfig(cfg))
	}
	if err := c.ChainSync().Client.Sync(nil); err != nil {
		t.Fatal(err)
	}
	return ch
}

func next(t testing.TB, ch <-chan seen) seen {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("follower saw nothing")
		return seen{}
	}
}

// txSpec is a payment transaction built by hand from ledger primitives.
type txSpec struct {
	inputs  []utxoKey
	outputs []txOut
	fee     uint64 // 0: the minimum fee, found by iteration
	ttl     uint64 // 0: none
	meta    any    // metadata under label 1448037455; nil: no auxiliary data
	signers []ed25519.PrivateKey
	// badSig flips a bit of the first signature.
	badSig bool
}

type txOut struct {
	addr     common.Address
	lovelace uint64
}

var detEnc, _ = cbor.CoreDetEncOptions().EncMode()

func mustEncode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := detEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// build encodes the transaction and returns it with its ID. With fee 0
// the fee is iterated with conway.MinFeeTx to a fixed point.
func (s txSpec) build(t testing.TB) ([]byte, [32]byte) {
	t.Helper()
	fee := s.fee
	if fee == 0 {
		for {
			raw, _ := s.encode(t, fee)
			tx, err := conway.NewConwayTransactionFromCbor(raw)
			if err != nil {
				t.Fatal(err)
			}
			min, err := conway.MinFeeTx(tx, protocolParameters())
			if err != nil {
				t.Fatal(err)
			}
			if min <= fee {
				break
			}
			fee = min
		}
	}
	return s.encode(t, fee)
}

func (s txSpec) encode(t testing.TB, fee uint64) ([]byte, [32]byte) {
	t.Helper()
	var inputs []any
	for _, in := range s.inputs {
		inputs = append(inputs, []any{in.tx[:], in.index})
	}
	var outputs []any
	for _, o := range s.outputs {
		ab, err := o.addr.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, []any{ab, o.lovelace})
	}
	body := map[uint64]any{0: inputs, 1: outputs, 2: fee}
	if s.ttl != 0 {
		body[3] = s.ttl
	}
	var aux []byte
	if s.meta != nil {
		aux = mustEncode(t, map[uint64]any{1448037455: s.meta})
		h := blake2b.Sum256(aux)
		body[7] = h[:]
	}
	bodyRaw := mustEncode(t, body)
	id := blake2b.Sum256(bodyRaw)
	var wits []any
	for i, k := range s.signers {
		sig := ed25519.Sign(k, id[:])
		if s.badSig && i == 0 {
			sig[0] ^= 1
		}
		wits = append(wits, []any{[]byte(k.Public().(ed25519.PublicKey)), sig})
	}
	witRaw := mustEncode(t, map[uint64]any{0: wits})
	auxRaw := []byte{0xf6}
	if aux != nil {
		auxRaw = aux
	}
	raw := mustEncode(t, []any{cbor.RawMessage(bodyRaw), cbor.RawMessage(witRaw), true, cbor.RawMessage(auxRaw)})
	return raw, id
}

// testKey is a fresh payment key and its devnet address.
func testKey(t testing.TB) (ed25519.PrivateKey, common.Address) {
	t.Helper()
	pub, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := common.Blake2b224Hash(pub)
	a, err := common.NewAddressFromParts(common.AddressTypeKeyNone, 0, h[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	return k, a
}

// payFromGenesis spends the devnet key's genesis output: 5 ADA to payee,
// the rest back to the devnet's address, with a fee of 0.2 ADA.
func payFromGenesis(d *Devnet, key ed25519.PrivateKey, genesisIn utxoKey, payee common.Address) txSpec {
	return txSpec{
		inputs:  []utxoKey{genesisIn},
		outputs: []txOut{{payee, 5_000_000}, {d.Address(), DefaultFundLovelace - 5_000_000 - 200_000}},
		fee:     200_000,
		signers: []ed25519.PrivateKey{key},
	}
}
