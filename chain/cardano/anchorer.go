package cardano

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/ledger/common"
	"github.com/blinklabs-io/gouroboros/ledger/conway"
	"github.com/blinklabs-io/gouroboros/protocol/localtxsubmission"

	"github.com/volo-chat/volo/chain"
)

// Defaults of AnchorerConfig.
const (
	DefaultTTL  = 7200 // slots: two hours on mainnet
	DefaultPoll = time.Second
)

// maxRetryDelay caps the back-off between attempts to reach the node.
const maxRetryDelay = 30 * time.Second

// ErrRejected is wrapped by the error Anchor returns when the node
// refuses the transaction; the error's text carries the node's reason.
var ErrRejected = errors.New("cardano: transaction rejected by the node")

// errExpired ends the wait for a transaction that can no longer be
// included (its TTL passed, or its start point is gone): build another.
var errExpired = errors.New("cardano: transaction expired before inclusion")

// AnchorerConfig says which node to use and what to sign with.
type AnchorerConfig struct {
	Socket    string  // the node's node-to-client socket
	Network   Network // its network (magic, address network ID)
	KeyFile   string  // cardano-cli payment .skey
	StateFile string  // optional: remembers the last anchor's change output across restarts
	TTL       uint64  // slots after the current slot; default DefaultTTL
	// Poll is the first delay before retrying a node that cannot be
	// reached (doubling up to 30 s); default DefaultPoll.
	Poll time.Duration
}

// Anchorer publishes anchors through a cardano-node's local socket. Each
// anchor spends the previous anchor's change output, so one node's
// anchors form one chain; Anchor calls run one at a time.
type Anchorer struct {
	cfg  AnchorerConfig
	log  *slog.Logger
	e    endpoint
	key  ed25519.PrivateKey
	addr common.Address

	mu   sync.Mutex // one Anchor at a time
	last *utxo      // the last anchor's change output

	connMu sync.Mutex
	c      *conn // state queries and submission; nil until dialed
}

var _ chain.Anchorer = (*Anchorer)(nil)

// NewAnchorer reads the payment key and the state file. It does not
// connect: the node may start later, and Anchor dials (and redials) it.
func NewAnchorer(cfg AnchorerConfig, log *slog.Logger) (*Anchorer, error) {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Network.Magic == 0 {
		return nil, errors.New("cardano: anchorer: no network")
	}
	key, err := ReadSigningKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	addr, err := EnterpriseAddress(key.Public().(ed25519.PublicKey), cfg.Network)
	if err != nil {
		return nil, err
	}
	a := &Anchorer{
		cfg:  cfg,
		log:  log.With("component", "cardano-anchorer"),
		e:    endpoint{network: "unix", addr: cfg.Socket, magic: cfg.Network.Magic},
		key:  key,
		addr: addr,
	}
	if cfg.StateFile != "" {
		last, err := readState(cfg.StateFile)
		if err != nil {
			return nil, err
		}
		a.last = last
	}
	a.log.Info("anchorer ready", "address", addr.String(), "network", cfg.Network.Name, "socket", cfg.Socket)
	return a, nil
}

// Address is the payment address the anchorer spends from and pays to.
func (a *Anchorer) Address() common.Address { return a.addr }

// Close ends the connection to the node.
func (a *Anchorer) Close() error {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.c != nil {
		a.c.Close()
		a.c = nil
	}
	return nil
}

// Anchor publishes an (Prev set to the spent transaction) and waits until
// its transaction is depth blocks deep. A rollback of its block resubmits
// the same transaction while it is valid, else a new one is built; a
// refusal by the node returns an error wrapping ErrRejected.
func (a *Anchorer) Anchor(ctx context.Context, an chain.Anchor, depth uint64) (chain.Inclusion, error) {
	if depth == 0 {
		depth = 1
	}
	if err := an.Check(); err != nil {
		return chain.Inclusion{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 0; ; attempt++ {
		st, err := a.query(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return chain.Inclusion{}, ctx.Err()
			}
			a.log.Warn("cardano node not reachable, retrying", "socket", a.cfg.Socket, "err", err)
			if err := a.wait(ctx, attempt); err != nil {
				return chain.Inclusion{}, err
			}
			continue
		}
		in, err := a.chooseInput(st.utxos)
		if err != nil {
			return chain.Inclusion{}, err
		}
		tx, err := buildAnchorTx(an, in, a.key, a.addr, st.params, st.point.Slot+a.cfg.TTL)
		if err != nil {
			return chain.Inclusion{}, err
		}
		a.log.Info("submitting anchor", "tx", tx.ID, "seq", an.Seq, "spends", in, "fee", tx.Fee, "ttl", tx.TTL)
		if err := a.submit(ctx, tx); err != nil {
			return chain.Inclusion{}, err
		}
		a.log.Info("anchor submitted", "tx", tx.ID)
		inc, err := a.await(ctx, tx, st.point, depth)
		if errors.Is(err, errExpired) {
			a.log.Warn("anchor transaction can no longer be included, building another", "tx", tx.ID, "err", err)
			attempt = 0
			continue
		}
		if err != nil {
			return chain.Inclusion{}, err
		}
		a.remember(tx.Change)
		return inc, nil
	}
}

// wait sleeps before the next attempt, Poll doubling up to maxRetryDelay.
func (a *Anchorer) wait(ctx context.Context, attempt int) error {
	d := a.cfg.Poll << min(attempt, 16)
	if d <= 0 || d > maxRetryDelay {
		d = maxRetryDelay
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ledgerState is what one build needs from the node.
type ledgerState struct {
	params *conway.ConwayProtocolParameters
	utxos  []utxo
	point  chain.Point
}

// connection returns the query/submission connection, dialing it first.
func (a *Anchorer) connection(ctx context.Context) (*conn, error) {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.c != nil {
		select {
		case err := <-a.c.errs:
			a.log.Warn("connection to the node ended", "err", err)
			a.c.Close()
			a.c = nil
		default:
			return a.c, nil
		}
	}
	c, err := dial(ctx, a.e)
	if err != nil {
		return nil, err
	}
	a.c = c
	return c, nil
}

// drop closes the connection after an error so the next call redials.
func (a *Anchorer) drop(c *conn) {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.c == c {
		a.c = nil
	}
	c.Close()
}

// query reads the protocol parameters, the address's UTxOs and the tip
// from one acquired ledger state.
func (a *Anchorer) query(ctx context.Context) (ledgerState, error) {
	c, err := a.connection(ctx)
	if err != nil {
		return ledgerState{}, err
	}
	var st ledgerState
	err = withContext(ctx, func() { a.drop(c) }, func() error {
		q := c.LocalStateQuery().Client
		if err := q.AcquireVolatileTip(); err != nil {
			return fmt.Errorf("acquire: %w", err)
		}
		defer q.Release()
		era, err := q.GetCurrentEra()
		if err != nil {
			return fmt.Errorf("current era: %w", err)
		}
		if era != conway.EraIdConway {
			return fmt.Errorf("the node is in era %d; anchors need Conway (%d)", era, conway.EraIdConway)
		}
		pp, err := q.GetCurrentProtocolParams()
		if err != nil {
			return fmt.Errorf("protocol parameters: %w", err)
		}
		cpp, ok := pp.(*conway.ConwayProtocolParameters)
		if !ok {
			return fmt.Errorf("protocol parameters of type %T, want Conway", pp)
		}
		st.params = cpp
		res, err := q.GetUTxOByAddress([]ledger.Address{a.addr})
		if err != nil {
			return fmt.Errorf("UTxOs of %s: %w", a.addr, err)
		}
		for id, out := range res.Results {
			if out.Assets() != nil || id.Idx < 0 {
				continue // only ADA-only outputs are spent: the change carries no tokens
			}
			st.utxos = append(st.utxos, utxo{TxID: chain.TxID(id.Hash), Index: uint32(id.Idx), Lovelace: out.Amount().Uint64()})
		}
		p, err := q.GetChainPoint()
		if err != nil {
			return fmt.Errorf("chain point: %w", err)
		}
		st.point = fromPoint(*p)
		return nil
	})
	if err != nil {
		a.drop(c)
		return ledgerState{}, fmt.Errorf("cardano: query the node: %w", err)
	}
	return st, nil
}

// chooseInput picks the last anchor's change output when it is still
// unspent, else the largest output.
func (a *Anchorer) chooseInput(utxos []utxo) (utxo, error) {
	var largest *utxo
	for i, u := range utxos {
		if a.last != nil && u.TxID == a.last.TxID && u.Index == a.last.Index {
			return u, nil
		}
		if largest == nil || u.Lovelace > largest.Lovelace {
			largest = &utxos[i]
		}
	}
	if largest == nil {
		return utxo{}, fmt.Errorf("%w: no ADA-only output at %s", ErrInsufficientFunds, a.addr)
	}
	if a.last != nil {
		a.log.Warn("the last anchor's change output is not in the UTxO set (rolled back or spent elsewhere); spending the largest output",
			"last", *a.last, "spends", *largest)
	}
	return *largest, nil
}

// submit hands tx to the node.
func (a *Anchorer) submit(ctx context.Context, tx *anchorTx) error {
	c, err := a.connection(ctx)
	if err != nil {
		return err
	}
	err = withContext(ctx, func() { a.drop(c) }, func() error {
		return c.LocalTxSubmission().Client.SubmitTx(uint16(conway.EraIdConway), tx.CBOR)
	})
	var rej localtxsubmission.TransactionRejectedError
	if errors.As(err, &rej) {
		return fmt.Errorf("%w: transaction %s: %s", ErrRejected, tx.ID, rejectReason(rej))
	}
	if err != nil {
		a.drop(c)
		return fmt.Errorf("cardano: submit %s: %w", tx.ID, err)
	}
	return nil
}

// rejectReason is the node's reason as text: a plain string when the
// node sent one, else gouroboros's rendering of the ledger error.
func rejectReason(rej localtxsubmission.TransactionRejectedError) string {
	var g *ledger.GenericError
	if errors.As(rej.Reason, &g) {
		if s, ok := g.Value.(string); ok {
			return s
		}
	}
	if rej.Reason != nil {
		return rej.Reason.Error()
	}
	return fmt.Sprintf("undecoded reason %x", rej.ReasonCbor)
}

// await follows the chain from start until tx is depth blocks deep,
// resubmitting it when a rollback removes its block.
func (a *Anchorer) await(ctx context.Context, tx *anchorTx, start chain.Point, depth uint64) (chain.Inclusion, error) {
	for attempt := 0; ; attempt++ {
		var inc *chain.Inclusion
		var since []chain.Point // the inclusion block and those after it
		var result chain.Inclusion
		prev := start
		done := errors.New("done")
		err := follow(ctx, a.e, []chain.Point{start}, func(ev chain.Event, b *chain.Block) error {
			if ev.Rollback {
				kept := slices.IndexFunc(since, func(p chain.Point) bool { return samePoint(p, ev.Point) })
				if kept >= 0 {
					since = since[:kept+1]
				}
				if inc != nil && kept < 0 {
					since = nil
					a.log.Warn("the anchor's block was rolled back", "tx", tx.ID, "block", inc.Block, "to", ev.Point)
					inc = nil
					if ev.Tip.Point.Slot > tx.TTL {
						return fmt.Errorf("%w: TTL %d passed (tip slot %d)", errExpired, tx.TTL, ev.Tip.Point.Slot)
					}
					a.log.Info("resubmitting the anchor transaction", "tx", tx.ID)
					if err := a.submit(ctx, tx); err != nil {
						// It may still be in the node's mempool; the TTL
						// decides when to give up on it.
						a.log.Warn("resubmission refused", "tx", tx.ID, "err", err)
					} else {
						a.log.Info("anchor resubmitted", "tx", tx.ID)
					}
				}
				prev = ev.Point
				return nil
			}
			if inc == nil {
				for _, t := range b.Txs {
					if t.ID == tx.ID {
						inc = &chain.Inclusion{Anchor: tx.Anchor, TxID: tx.ID, Block: ev.Point, Prev: prev, BlockNo: ev.BlockNo}
						a.log.Info("anchor included", "tx", tx.ID, "block", ev.Point, "block_no", ev.BlockNo)
						break
					}
				}
				if inc == nil && ev.Point.Slot > tx.TTL {
					return fmt.Errorf("%w: TTL %d passed (block slot %d)", errExpired, tx.TTL, ev.Point.Slot)
				}
			}
			prev = ev.Point
			if inc != nil {
				since = append(since, ev.Point)
			}
			if inc != nil && chain.Depth(inc.BlockNo, chain.Tip{BlockNo: ev.BlockNo}) >= depth {
				result = *inc
				return done
			}
			return nil
		})
		switch {
		case errors.Is(err, done):
			return result, nil
		case errors.Is(err, errExpired):
			return chain.Inclusion{}, err
		case errors.Is(err, chain.ErrNotFound):
			return chain.Inclusion{}, fmt.Errorf("%w: the chain no longer holds %s", errExpired, start)
		case ctx.Err() != nil:
			return chain.Inclusion{}, ctx.Err()
		}
		a.log.Warn("following the chain failed, retrying", "tx", tx.ID, "err", err)
		if err := a.wait(ctx, attempt); err != nil {
			return chain.Inclusion{}, err
		}
	}
}

// savedState is the state file: the last anchor's change output.
type savedState struct {
	TxID     string `json:"tx_id"`
	Index    uint32 `json:"index"`
	Lovelace uint64 `json:"lovelace"`
}

func (a *Anchorer) remember(u utxo) {
	a.last = &u
	if a.cfg.StateFile == "" {
		return
	}
	if err := writeState(a.cfg.StateFile, u); err != nil {
		a.log.Error("cannot save the anchor state; the next anchor after a restart may spend another output", "file", a.cfg.StateFile, "err", err)
	}
}

func readState(path string) (*utxo, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cardano: read anchor state: %w", err)
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cardano: read anchor state %s: %w", path, err)
	}
	id, err := hex.DecodeString(s.TxID)
	if err != nil || len(id) != len(chain.TxID{}) {
		return nil, fmt.Errorf("cardano: read anchor state %s: bad transaction ID %q", path, s.TxID)
	}
	return &utxo{TxID: chain.TxID(id), Index: s.Index, Lovelace: s.Lovelace}, nil
}

func writeState(path string, u utxo) error {
	b, err := json.Marshal(savedState{TxID: u.TxID.String(), Index: u.Index, Lovelace: u.Lovelace})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".anchor-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
