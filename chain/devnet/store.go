package devnet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/blinklabs-io/gouroboros/cbor"
	gledger "github.com/blinklabs-io/gouroboros/ledger"
)

// chainFileVersion is the version of Dir/chain.cbor's genesis record.
const chainFileVersion = 1

// genesisRecord opens Dir/chain.cbor: what the chain's genesis was made
// from, so a chain is never replayed over another genesis.
type genesisRecord struct {
	_            struct{} `cbor:",toarray"`
	Version      uint64
	SystemStart  int64    // Unix seconds
	FundLovelace uint64   // per funded address
	Addresses    [][]byte // funded addresses, the devnet's own first
}

// store is Dir/chain.cbor: the genesis record, then every block's CBOR,
// one after the other. Blocks are appended as made; Rollback truncates.
type store struct {
	f       *os.File
	offsets []int64 // where each block starts
	size    int64
}

func (d *Devnet) genesisRecordLocked() (genesisRecord, error) {
	g := genesisRecord{Version: chainFileVersion, SystemStart: d.systemStart.Unix(), FundLovelace: d.cfg.FundLovelace}
	for _, e := range d.ledger.genesis {
		b, err := e.output.Address().Bytes()
		if err != nil {
			return g, fmt.Errorf("devnet: genesis address: %w", err)
		}
		g.Addresses = append(g.Addresses, b)
	}
	return g, nil
}

// openChain replays Dir/chain.cbor, or starts it with a new genesis.
func (d *Devnet) openChain() error {
	path := filepath.Join(d.cfg.Dir, chainName)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return d.newChain(path)
	}
	if err != nil {
		return fmt.Errorf("devnet: read chain: %w", err)
	}
	var g genesisRecord
	n, err := cbor.Decode(data, &g)
	if err != nil {
		return fmt.Errorf("devnet: %s: genesis record: %w", path, err)
	}
	d.systemStart = timeUnix(g.SystemStart)
	want, err := d.genesisRecordLocked()
	if err != nil {
		return err
	}
	if g.Version != chainFileVersion || g.FundLovelace != want.FundLovelace || !sameAddresses(g.Addresses, want.Addresses) {
		return fmt.Errorf("devnet: %s was made for another genesis (payment key, fund addresses or amount changed); remove it to start a new chain", path)
	}
	s := &store{offsets: nil, size: int64(n)}
	for off := n; off < len(data); {
		var raw cbor.RawMessage
		m, err := cbor.Decode(data[off:], &raw)
		if err == nil {
			err = d.replay(raw)
		}
		if err != nil {
			// A block torn by a crash, or one that does not follow: the
			// chain ends before it.
			d.log.Warn("devnet: chain file ends early", "file", path, "offset", off, "err", err)
			break
		}
		s.offsets = append(s.offsets, int64(off))
		off += m
		s.size = int64(off)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("devnet: open chain: %w", err)
	}
	if err := f.Truncate(s.size); err != nil {
		f.Close()
		return fmt.Errorf("devnet: truncate chain: %w", err)
	}
	s.f = f
	d.store = s
	d.log.Info("devnet: chain replayed", "file", path, "blocks", len(d.blocks))
	return nil
}

func (d *Devnet) newChain(path string) error {
	d.systemStart = d.now().Truncate(SlotLength)
	g, err := d.genesisRecordLocked()
	if err != nil {
		return err
	}
	rec, err := cbor.Encode(&g)
	if err != nil {
		return fmt.Errorf("devnet: encode genesis: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("devnet: create chain: %w", err)
	}
	if _, err := f.Write(rec); err != nil {
		f.Close()
		return fmt.Errorf("devnet: write genesis: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("devnet: write genesis: %w", err)
	}
	d.store = &store{f: f, size: int64(len(rec))}
	return nil
}

// replay checks a stored block against the chain so far, and applies it.
func (d *Devnet) replay(raw []byte) error {
	blk, err := gledger.NewBlockFromCbor(gledger.BlockTypeConway, raw)
	if err != nil {
		return err
	}
	number, prev := uint64(1), []byte(nil)
	var lastSlot uint64
	if len(d.blocks) > 0 {
		last := d.blocks[len(d.blocks)-1]
		number, prev, lastSlot = last.number+1, last.hash[:], last.slot
	}
	switch {
	case blk.BlockNumber() != number:
		return fmt.Errorf("block number %d, want %d", blk.BlockNumber(), number)
	case prev != nil && !bytes.Equal(blk.PrevHash().Bytes(), prev):
		return fmt.Errorf("block %d does not follow block %d", number, number-1)
	case prev != nil && blk.SlotNumber() <= lastSlot:
		return fmt.Errorf("block %d slot %d not after %d", number, blk.SlotNumber(), lastSlot)
	}
	var parts struct {
		_         struct{} `cbor:",toarray"`
		Header    cbor.RawMessage
		Bodies    []cbor.RawMessage
		Witnesses []cbor.RawMessage
		Aux       map[uint64]cbor.RawMessage
		Invalid   []uint64
	}
	if _, err := cbor.Decode(raw, &parts); err != nil {
		return err
	}
	if len(parts.Bodies) != len(parts.Witnesses) || len(parts.Invalid) != 0 {
		return errors.New("block body is not one the devnet makes")
	}
	b := &block{number: number, slot: blk.SlotNumber(), hash: blk.Hash(), raw: raw}
	for i := range parts.Bodies {
		aux, ok := parts.Aux[uint64(i)]
		if !ok {
			aux = []byte{0xf6}
		}
		txRaw := cborHead(cborArray, 4)
		txRaw = append(txRaw, parts.Bodies[i]...)
		txRaw = append(txRaw, parts.Witnesses[i]...)
		txRaw = append(txRaw, 0xf5) // valid: the devnet takes no other
		txRaw = append(txRaw, aux...)
		tx, err := decodeTx(txRaw)
		if err != nil {
			return fmt.Errorf("block %d transaction %d: %w", number, i, err)
		}
		b.txs = append(b.txs, tx)
	}
	for _, tx := range b.txs {
		d.ledger.apply(tx)
	}
	d.blocks = append(d.blocks, b)
	return nil
}

func (s *store) append(b *block) error {
	if _, err := s.f.Write(b.raw); err != nil {
		return fmt.Errorf("devnet: append block %d: %w", b.number, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("devnet: append block %d: %w", b.number, err)
	}
	s.offsets = append(s.offsets, s.size)
	s.size += int64(len(b.raw))
	return nil
}

// truncate keeps the first keep blocks.
func (s *store) truncate(keep int) error {
	if keep >= len(s.offsets) {
		return nil
	}
	size := s.offsets[keep]
	if err := s.f.Truncate(size); err != nil {
		return fmt.Errorf("devnet: truncate chain: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("devnet: truncate chain: %w", err)
	}
	s.offsets, s.size = s.offsets[:keep], size
	return nil
}

func (s *store) close() error {
	if err := s.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("devnet: close chain: %w", err)
	}
	return nil
}

func sameAddresses(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }
