// Package relay holds encrypted envelopes for devices that are not online:
// per-device mailboxes in the node's store, on the relays closest to each.
package relay

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Mailbox limits and defaults.
const (
	// DefaultMailboxCap is the number of envelopes with the device's
	// delivery key that a device's mailbox holds.
	DefaultMailboxCap = 10_000
	// DefaultRequestsCap is the number of envelopes without the device's
	// delivery key (message requests) that a device's mailbox holds.
	DefaultRequestsCap = 100
	// maxCommitBatch bounds how many envelopes one group commit takes.
	maxCommitBatch = 4096
	// expireBatch bounds the envelopes one expiry transaction deletes.
	expireBatch = 1000
	// txnSoftLimit is the size at which a group commit starts a new
	// transaction, well below badger's limit for one transaction.
	txnSoftLimit = 4 << 20
	// maxQueuedOps bounds the writes waiting for the committer.
	maxQueuedOps = 1024
	// maxCachedDevices bounds the devices whose counters the committer
	// keeps in memory; past it the cache starts again empty.
	maxCachedDevices = 1 << 16
	// envelopeWriteOverhead estimates the index entries and key bytes one
	// stored envelope adds to a transaction.
	envelopeWriteOverhead = 512
)

// Key layout inside the relay's view of the store. Device IDs are their
// 36-byte binary CIDs; numbers are big-endian so keys sort by them.
//
//	m/<device>/<seq>          → encoded envelope     (the mailbox, in arrival order)
//	i/<envelope ref>          → device, seq, expiry, quota (dedup and ack lookup; ref = ID ‖ SHA-256 of the ciphertext;
//	                                                   quota 1 for a message request, 0 for a contact's)
//	x/<expiry ms>/<device>/<seq> → empty             (expiry index)
//	n/<device>                → count                (all envelopes)
//	r/<device>                → count                (message requests among them)
//	s/<device>                → last seq
//	v/<device>                → subscribe token      (the newest: its delivery verifier)
const (
	pMail   = "m/"
	pID     = "i/"
	pExpiry = "x/"
	pCount  = "n/"
	pSeq    = "s/"
	pReq    = "r/"
	pToken  = "v/"
)

// Stored is an envelope in a mailbox with its place in it.
type Stored struct {
	Seq      uint64
	Envelope wire.Envelope
}

// PutResult is what happened to one envelope of a Put.
type PutResult struct {
	// Seq is the envelope's place in its mailbox.
	Seq uint64
	// Duplicate reports that the mailbox already held this envelope
	// (the same ID and ciphertext).
	Duplicate bool
	// Err is wire.ErrMailboxFull, wire.ErrExpired, wire.ErrFromFuture or
	// wire.ErrBadEnvelope; nil when stored.
	Err error
}

// Mailboxes is the relay's pending store: an ordered mailbox per device,
// deduplicated by envelope reference (ID and ciphertext hash), capped, expiring without scanning.
//
// Every write (puts, acks, expiry, handover deletes) goes through one
// committer goroutine (from Start to Close), so writes never conflict and the committer keeps
// each device's count and last sequence number in memory. Writes that
// arrive while a commit runs share the next one: durability costs one
// fsync per batch, not per envelope.
type Mailboxes struct {
	view   *store.Prefixed
	prefix []byte // view.Key(nil)
	cap    int
	// requestsCap is the quota of envelopes without the delivery key.
	requestsCap int
	now         func() time.Time
	maxTTL      time.Duration

	committer *service.Committer[*op]

	// Owned by the committer goroutine.
	devs  map[string]*devState
	dirty []string // devices in devs whose counters changed since the last flush

	watchMu  sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

// devState is the committer's copy of a device's counts, last sequence
// and delivery verifier.
type devState struct {
	count, seq, requests uint64
	// flushedRequests is requests as last written: most mailboxes never
	// hold a request, and their counter is then never written.
	flushedRequests uint64
	// verifier is the Delivery of the newest subscribe token, made at
	// tokenTime; nil when the relay has none.
	verifier  []byte
	tokenTime time.Time
	dirty     bool
}

type opKind uint8

const (
	opPut opKind = iota
	opAck
	opDeleteAt
	opToken
)

// op is one write waiting for the committer.
type op struct {
	kind opKind
	// opPut
	envs []wire.Envelope
	res  []PutResult
	// opAck
	dev  []byte
	refs []wire.EnvelopeRef
	// opDeleteAt
	at []location
	// opToken
	token    wire.SubscribeToken
	rawToken []byte
	// results
	deleted int
}

// location is where an envelope is stored: its device, seq and expiry.
type location struct{ dev, seq, exp []byte }

// NewMailboxes opens the mailboxes in view. capacity is the cap per device
// (0 means DefaultMailboxCap); now is the clock (nil means time.Now). Writes
// wait for Start.
func NewMailboxes(view *store.Prefixed, capacity int, now func() time.Time) *Mailboxes {
	if capacity <= 0 {
		capacity = DefaultMailboxCap
	}
	if now == nil {
		now = time.Now
	}
	m := &Mailboxes{
		view: view, prefix: view.Key(nil), cap: capacity, requestsCap: DefaultRequestsCap, now: now, maxTTL: wire.MaxTTL,
		devs: make(map[string]*devState), watchers: make(map[string]map[chan struct{}]struct{}),
	}
	m.committer = service.NewCommitter(service.CommitterConfig[*op]{
		Commit:    m.commitBatch,
		Queue:     maxQueuedOps,
		Weight:    func(o *op) int { return len(o.envs) + len(o.refs) + len(o.at) },
		MaxWeight: maxCommitBatch,
		Closed:    ErrStopped,
	})
	return m
}

// Start starts the committer; writes before it fail.
func (m *Mailboxes) Start() { m.committer.Start() }

// Close stops the committer after the commit in progress; writes after it
// fail with ErrStopped. Close may be called more than once.
func (m *Mailboxes) Close() { m.committer.Close() }

// submit hands o to the committer and waits until it is committed.
func (m *Mailboxes) submit(ctx context.Context, o *op) error {
	if err := m.committer.Submit(ctx, o); err != nil {
		if errors.Is(err, service.ErrNotStarted) {
			return fmt.Errorf("relay: mailboxes: %w", err)
		}
		return err
	}
	return nil
}

// Put stores envelopes and returns once they are durably committed (with
// the store's sync writes), with one result per envelope in order.
func (m *Mailboxes) Put(ctx context.Context, envs []wire.Envelope) ([]PutResult, error) {
	o := &op{kind: opPut, envs: envs, res: make([]PutResult, len(envs))}
	if err := m.submit(ctx, o); err != nil {
		return nil, err
	}
	return o.res, nil
}

// Ack deletes the envelopes refs from device's mailbox: the device has
// them. References that are unknown, already deleted or of envelopes
// addressed to another device are ignored: only an exact match (ID and
// ciphertext hash) is deleted. It returns how many were deleted.
func (m *Mailboxes) Ack(device ident.DeviceID, refs []wire.EnvelopeRef) (int, error) {
	o := &op{kind: opAck, dev: device.Bytes(), refs: refs}
	if err := m.submit(context.Background(), o); err != nil {
		return 0, err
	}
	return o.deleted, nil
}

// Register keeps tok, a verified subscribe token of its device, when it is
// newer than the one kept: its delivery verifier decides which quota the
// device's envelopes count against from then on.
func (m *Mailboxes) Register(ctx context.Context, tok wire.SubscribeToken) error {
	raw, err := tok.Encode()
	if err != nil {
		return err
	}
	return m.submit(ctx, &op{kind: opToken, dev: tok.Device.Bytes(), token: tok, rawToken: raw})
}

// Token returns the newest subscribe token registered for device,
// encoded, or nil.
func (m *Mailboxes) Token(device ident.DeviceID) ([]byte, error) {
	var raw []byte
	err := m.view.View(func(txn *badger.Txn) error {
		item, err := txn.Get(m.key(pToken, device.Bytes()))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		raw, err = item.ValueCopy(nil)
		return err
	})
	return raw, err
}

// commitBatch commits a batch in the committer and wakes the watchers of
// the mailboxes that received envelopes.
func (m *Mailboxes) commitBatch(batch []*op) error {
	if err := m.commit(batch); err != nil {
		// The batch may be partly committed: forget the cached
		// counters and read them again from the store.
		clear(m.devs)
		m.dirty = m.dirty[:0]
		return err
	}
	if len(m.devs) > maxCachedDevices {
		clear(m.devs)
	}
	var woken map[string]bool
	for _, o := range batch {
		if o.kind != opPut {
			continue
		}
		for i, r := range o.res {
			if r.Err == nil && !r.Duplicate {
				if woken == nil {
					woken = make(map[string]bool)
				}
				woken[string(o.envs[i].To.Bytes())] = true
			}
		}
	}
	m.wake(woken)
	return nil
}

// commit applies a batch, in one transaction unless it outgrows
// txnSoftLimit. A failed batch may be partly committed; senders retry, and
// envelope IDs make the retry idempotent.
func (m *Mailboxes) commit(batch []*op) error {
	now := m.now()
	txn := m.view.NewTransaction(true)
	defer func() { txn.Discard() }()
	pending := 0
	// room commits the transaction so far when size more bytes would
	// outgrow it.
	room := func(size int) error {
		if pending > 0 && pending+size > txnSoftLimit {
			if err := m.flushCounters(txn); err != nil {
				return err
			}
			if err := txn.Commit(); err != nil {
				return fmt.Errorf("relay: commit: %w", err)
			}
			txn = m.view.NewTransaction(true)
			pending = 0
		}
		pending += size
		return nil
	}
	for _, o := range batch {
		switch o.kind {
		case opPut:
			for i, e := range o.envs {
				if err := room(len(e.Ciphertext) + envelopeWriteOverhead); err != nil {
					return err
				}
				res, err := m.put(txn, e, now)
				if err != nil {
					return fmt.Errorf("relay: store envelope %s: %w", e.ID, err)
				}
				o.res[i] = res
			}
		case opAck:
			for _, ref := range o.refs {
				if err := room(envelopeWriteOverhead); err != nil {
					return err
				}
				ok, err := m.ackOne(txn, o.dev, ref)
				if err != nil {
					return fmt.Errorf("relay: ack %s: %w", ref, err)
				}
				if ok {
					o.deleted++
				}
			}
		case opToken:
			if err := room(len(o.rawToken) + envelopeWriteOverhead); err != nil {
				return err
			}
			if err := m.register(txn, o.dev, o.token, o.rawToken); err != nil {
				return fmt.Errorf("relay: register token of %s: %w", o.token.Device, err)
			}
		case opDeleteAt:
			for _, l := range o.at {
				if err := room(envelopeWriteOverhead); err != nil {
					return err
				}
				ok, err := m.deleteAt(txn, l)
				if err != nil {
					return fmt.Errorf("relay: delete: %w", err)
				}
				if ok {
					o.deleted++
				}
			}
		}
	}
	if err := m.flushCounters(txn); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("relay: commit: %w", err)
	}
	return nil
}

// state returns the committer's counters of dev, reading them on first use.
func (m *Mailboxes) state(txn *badger.Txn, dev []byte) (*devState, error) {
	if s, ok := m.devs[string(dev)]; ok {
		return s, nil
	}
	count, err := m.getUint(txn, m.key(pCount, dev))
	if err != nil {
		return nil, err
	}
	seq, err := m.getUint(txn, m.key(pSeq, dev))
	if err != nil {
		return nil, err
	}
	requests, err := m.getUint(txn, m.key(pReq, dev))
	if err != nil {
		return nil, err
	}
	s := &devState{count: count, seq: seq, requests: requests, flushedRequests: requests}
	item, err := txn.Get(m.key(pToken, dev))
	switch {
	case err == nil:
		err = item.Value(func(v []byte) error {
			tok, err := wire.DecodeSubscribeToken(v)
			if err != nil {
				return fmt.Errorf("relay: stored token: %w", err)
			}
			s.verifier, s.tokenTime = tok.Delivery, tok.Time
			return nil
		})
		if err != nil {
			return nil, err
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return nil, err
	}
	m.devs[string(dev)] = s
	return s, nil
}

// register stores tok when it is newer than dev's kept token.
func (m *Mailboxes) register(txn *badger.Txn, dev []byte, tok wire.SubscribeToken, raw []byte) error {
	s, err := m.state(txn, dev)
	if err != nil {
		return err
	}
	if !s.tokenTime.IsZero() && !tok.Time.After(s.tokenTime) {
		return nil
	}
	if err := txn.Set(m.key(pToken, dev), raw); err != nil {
		return err
	}
	s.verifier, s.tokenTime = tok.Delivery, tok.Time
	return nil
}

// flushCounters writes the counters changed since the last flush.
func (m *Mailboxes) flushCounters(txn *badger.Txn) error {
	for _, dev := range m.dirty {
		s := m.devs[dev]
		err := m.setCounter(txn, m.key(pCount, []byte(dev)), s.count)
		if err == nil && s.requests != s.flushedRequests {
			err = m.setCounter(txn, m.key(pReq, []byte(dev)), s.requests)
		}
		if err == nil {
			err = txn.Set(m.key(pSeq, []byte(dev)), u64(s.seq))
		}
		if err != nil {
			return fmt.Errorf("relay: counters: %w", err)
		}
		s.dirty, s.flushedRequests = false, s.requests
	}
	m.dirty = m.dirty[:0]
	return nil
}

// setCounter writes n at k, deleting k when n is 0.
func (m *Mailboxes) setCounter(txn *badger.Txn, k []byte, n uint64) error {
	if n == 0 {
		return txn.Delete(k)
	}
	return txn.Set(k, u64(n))
}

// isRequest reports whether e counts against the message requests quota
// of a mailbox whose delivery verifier is verifier: it lacks the delivery
// key whose SHA-256 is verifier.
func isRequest(e wire.Envelope, verifier []byte) bool {
	return verifier == nil || e.Delivery == nil ||
		subtle.ConstantTimeCompare(wire.DeliveryVerifier(e.Delivery), verifier) != 1
}

func (m *Mailboxes) put(txn *badger.Txn, e wire.Envelope, now time.Time) (PutResult, error) {
	if err := e.Check(); err != nil {
		return PutResult{Err: err}, nil
	}
	if e.TTL > m.maxTTL {
		return PutResult{Err: fmt.Errorf("%w: TTL %s above this relay's %s", wire.ErrBadEnvelope, e.TTL, m.maxTTL)}, nil
	}
	if err := e.CheckTime(now); err != nil {
		return PutResult{Err: err}, nil
	}
	dev := e.To.Bytes()
	idKey := m.key(pID, e.Ref().Bytes())
	if item, err := txn.Get(idKey); err == nil {
		var seq uint64
		err := item.Value(func(v []byte) error {
			if len(v) >= len(dev)+8 {
				seq = binary.BigEndian.Uint64(v[len(dev):])
			}
			return nil
		})
		return PutResult{Seq: seq, Duplicate: true}, err
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return PutResult{}, err
	}
	s, err := m.state(txn, dev)
	if err != nil {
		return PutResult{}, err
	}
	request := isRequest(e, s.verifier)
	switch {
	case request && s.requests >= uint64(m.requestsCap):
		return PutResult{Err: wire.ErrRequestsFull}, nil
	case !request && s.count-s.requests >= uint64(m.cap):
		return PutResult{Err: wire.ErrMailboxFull}, nil
	}
	quota := byte(0)
	if request {
		quota = 1
	}
	enc, err := e.Encode()
	if err != nil {
		return PutResult{Err: err}, nil
	}
	seq := s.seq + 1
	var seqB, expB [8]byte
	binary.BigEndian.PutUint64(seqB[:], seq)
	binary.BigEndian.PutUint64(expB[:], uint64(e.Expiry().UnixMilli()))
	if err := txn.Set(m.key(pMail, dev, seqB[:]), enc); err != nil {
		return PutResult{}, err
	}
	if err := txn.Set(idKey, cat(dev, seqB[:], expB[:], []byte{quota})); err != nil {
		return PutResult{}, err
	}
	if err := txn.Set(m.key(pExpiry, expB[:], dev, seqB[:]), nil); err != nil {
		return PutResult{}, err
	}
	s.seq, s.count = seq, s.count+1
	if request {
		s.requests++
	}
	m.markDirty(dev, s)
	return PutResult{Seq: seq}, nil
}

// ackOne deletes envelope ref if it is in dev's mailbox.
func (m *Mailboxes) ackOne(txn *badger.Txn, dev []byte, ref wire.EnvelopeRef) (bool, error) {
	rb := ref.Bytes()
	item, err := txn.Get(m.key(pID, rb))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return false, err
	}
	if len(v) != len(dev)+17 || string(v[:len(dev)]) != string(dev) {
		return false, nil
	}
	return true, m.delete(txn, dev, rb, v[len(dev):len(dev)+8], v[len(dev)+8:len(dev)+16], v[len(dev)+16] == 1)
}

// deleteAt deletes the envelope at l if it is still there.
func (m *Mailboxes) deleteAt(txn *badger.Txn, l location) (bool, error) {
	item, err := txn.Get(m.key(pMail, l.dev, l.seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var ref []byte
	var exp [8]byte
	err = item.Value(func(v []byte) error {
		e, err := wire.DecodeEnvelope(v)
		if err != nil {
			return err
		}
		ref = e.Ref().Bytes()
		binary.BigEndian.PutUint64(exp[:], uint64(e.Expiry().UnixMilli()))
		return nil
	})
	if err != nil {
		return false, err
	}
	request := false
	item, err = txn.Get(m.key(pID, ref))
	switch {
	case err == nil:
		err = item.Value(func(v []byte) error {
			request = len(v) == len(l.dev)+17 && v[len(l.dev)+16] == 1
			return nil
		})
		if err != nil {
			return false, err
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return false, err
	}
	return true, m.delete(txn, l.dev, ref, l.seq, exp[:], request)
}

// List returns up to limit envelopes of device with Seq > after, oldest
// first, skipping those already expired.
func (m *Mailboxes) List(device ident.DeviceID, after uint64, limit int) ([]Stored, error) {
	now := m.now()
	dev := device.Bytes()
	prefix := m.key(pMail, dev)
	var out []Stored
	err := m.view.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(m.key(pMail, dev, u64(after+1))); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			var e wire.Envelope
			err := item.Value(func(v []byte) error {
				var err error
				e, err = wire.DecodeEnvelope(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("relay: mailbox %s seq %d: %w", device, seq, err)
			}
			if e.Expiry().After(now) {
				out = append(out, Stored{Seq: seq, Envelope: e})
			}
		}
		return nil
	})
	return out, err
}

// Count is the number of envelopes in device's mailbox.
func (m *Mailboxes) Count(device ident.DeviceID) (int, error) {
	var n uint64
	err := m.view.View(func(txn *badger.Txn) error {
		var err error
		n, err = m.getUint(txn, m.key(pCount, device.Bytes()))
		return err
	})
	return int(n), err
}

// Expire deletes every envelope whose expiry is not after now, walking the
// expiry index only up to now. It returns how many were deleted.
func (m *Mailboxes) Expire(now time.Time) (int, error) {
	total := 0
	for {
		n, err := m.expireSome(now)
		total += n
		if err != nil || n < expireBatch {
			return total, err
		}
	}
}

func (m *Mailboxes) expireSome(now time.Time) (int, error) {
	var at []location
	prefix := m.key(pExpiry)
	limit := uint64(now.UnixMilli())
	err := m.view.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid() && len(at) < expireBatch; it.Next() {
			k := it.Item().KeyCopy(nil)[len(prefix):]
			if len(k) < 16 || binary.BigEndian.Uint64(k[:8]) > limit {
				break
			}
			at = append(at, location{exp: k[:8], dev: k[8 : len(k)-8], seq: k[len(k)-8:]})
		}
		return nil
	})
	if err != nil || len(at) == 0 {
		return 0, err
	}
	o := &op{kind: opDeleteAt, at: at}
	if err := m.submit(context.Background(), o); err != nil {
		return 0, fmt.Errorf("relay: expire: %w", err)
	}
	// Entries the committer found gone (acked meanwhile) still leave the
	// index, so the next round moves on.
	return len(at), nil
}

// delete removes one envelope and its index entries, and decrements the
// device's count (and its requests count for a message request). It runs
// in the committer.
func (m *Mailboxes) delete(txn *badger.Txn, dev, ref, seq, exp []byte, request bool) error {
	for _, k := range [][]byte{m.key(pMail, dev, seq), m.key(pID, ref), m.key(pExpiry, exp, dev, seq)} {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	s, err := m.state(txn, dev)
	if err != nil {
		return err
	}
	if s.count > 0 {
		s.count--
	}
	if request && s.requests > 0 {
		s.requests--
	}
	m.markDirty(dev, s)
	return nil
}

func (m *Mailboxes) markDirty(dev []byte, s *devState) {
	if !s.dirty {
		s.dirty = true
		m.dirty = append(m.dirty, string(dev))
	}
}

// Devices calls fn with every device whose mailbox holds envelopes and
// its count, in device order, until fn returns false.
func (m *Mailboxes) Devices(fn func(device ident.DeviceID, count int) bool) error {
	stop := errors.New("stop")
	err := m.view.Iterate([]byte(pCount), false, func(k, v []byte) error {
		dev, err := ident.DeviceIDFromBytes(k[len(pCount):])
		if err != nil || len(v) != 8 {
			return fmt.Errorf("relay: corrupt count entry %x", k)
		}
		if !fn(dev, int(binary.BigEndian.Uint64(v))) {
			return stop
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

// watch returns a channel that receives a value after envelopes are
// stored in device's mailbox, and the function that stops the watch.
func (m *Mailboxes) watch(device ident.DeviceID) (<-chan struct{}, func()) {
	key := string(device.Bytes())
	ch := make(chan struct{}, 1)
	m.watchMu.Lock()
	if m.watchers[key] == nil {
		m.watchers[key] = make(map[chan struct{}]struct{})
	}
	m.watchers[key][ch] = struct{}{}
	m.watchMu.Unlock()
	return ch, func() {
		m.watchMu.Lock()
		delete(m.watchers[key], ch)
		if len(m.watchers[key]) == 0 {
			delete(m.watchers, key)
		}
		m.watchMu.Unlock()
	}
}

func (m *Mailboxes) wake(devs map[string]bool) {
	if len(devs) == 0 {
		return
	}
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	if len(m.watchers) == 0 {
		return
	}
	for d := range devs {
		for ch := range m.watchers[d] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (m *Mailboxes) getUint(txn *badger.Txn, k []byte) (uint64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("relay: corrupt counter %q", k)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

func (m *Mailboxes) key(prefix string, parts ...[]byte) []byte {
	n := len(m.prefix) + len(prefix)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(append(k, m.prefix...), prefix...)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
