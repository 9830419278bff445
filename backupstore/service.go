// Package backupstore is a node's part in Volo's encrypted backups: chunks
// addressed by CID on the storage nodes closest to them, with per-user
// quotas, replication, repair, garbage collection and backup pointers.
package backupstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Timeouts and sizes of the service's network work.
const (
	// LookupTimeout bounds one closest-peers or providers lookup.
	LookupTimeout = 15 * time.Second
	// PublishTimeout bounds one DHT put of a pointer or one provide.
	PublishTimeout = 30 * time.Second
	// maxProviders bounds the providers a read or a replica count asks.
	maxProviders = 8
	// provideQueue bounds the chunks waiting to be announced; past it
	// they wait for the next republish.
	provideQueue = 1 << 14
	// provideWorkers is the number of concurrent provides.
	provideWorkers = 2
)

// Errors callers branch on.
var (
	// ErrQuotaExceeded reports an upload past the user's quota.
	ErrQuotaExceeded = errors.New("backupstore: quota exceeded")
	// ErrUnauthenticated reports an upload whose authorization does not
	// verify; it wraps wire.ErrUploadAuth or the lookup failure.
	ErrUnauthenticated = errors.New("backupstore: unauthenticated")
	// ErrNotFound reports a chunk or pointer no node has.
	ErrNotFound = errors.New("backupstore: not found")
	// ErrNoStorage reports that no storage node was found for a chunk.
	ErrNoStorage = errors.New("backupstore: no storage nodes")
	// ErrNoQuorum reports a chunk that fewer than the write quorum stored.
	ErrNoQuorum = errors.New("backupstore: write quorum not reached")
	// ErrStalePointer reports a pointer older than the one stored.
	ErrStalePointer = errors.New("backupstore: pointer older than the stored one")
	// ErrNotStorage reports a store request to a node that is not a
	// storage node.
	ErrNotStorage = errors.New("backupstore: this node is not a storage node")
	// ErrStopped reports a call on a stopped service.
	ErrStopped = errors.New("backupstore: service stopped")
)

// UserLookup finds a user's verified chain; *keyregistry.Service is one.
type UserLookup interface {
	Lookup(ctx context.Context, user e2ee.UserID) (keyregistry.Chain, error)
}

// Option changes how New builds the service.
type Option func(*Service)

// WithClock sets the clock of the authorization window and of garbage
// collection (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// Service is a node's backup store: it serves ProtocolID from its chunks
// when enabled, and uploads, downloads and finds chunks and pointers on
// the storage nodes for the node's clients.
type Service struct {
	cfg   Config
	host  *p2p.Host
	cs    *chunkStore
	users UserLookup
	log   *slog.Logger
	now   func() time.Time
	met   *metrics

	provide chan cid.Cid

	ctx    context.Context // lives from New until Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
}

// New builds the backup store over db, its part of the node's store, and
// registers the volo-backup record validator on host. It serves nothing
// until Start.
func New(cfg Config, host *p2p.Host, db *store.Prefixed, users UserLookup, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if users == nil {
		return nil, errors.New("backupstore: a user lookup is required to check uploads")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg: cfg, host: host, users: users, log: log, now: time.Now,
		provide: make(chan cid.Cid, provideQueue),
	}
	for _, o := range opts {
		o(s)
	}
	cs := newChunkStore(db, cfg.QuotaBytes, cfg.QuotaChunks)
	met, err := newMetrics(reg, cs)
	if err != nil {
		cs.close()
		return nil, err
	}
	if err := host.Validators().Add(wire.PointerNamespace, PointerValidator{}); err != nil {
		cs.close()
		return nil, fmt.Errorf("backupstore: %w", err)
	}
	cs.batched = func(n int) { met.commitBatch.Observe(float64(n)) }
	s.cs, s.met = cs, met
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start serves ProtocolID (when enabled) and starts the repair, garbage
// collection, republish and provide loops.
func (s *Service) Start(context.Context) error {
	s.wg.Go(func() {
		every(s.ctx, s.cfg.RepublishInterval.Std(), func() { s.Republish(s.ctx) })
	})
	if !s.cfg.Enabled {
		return nil
	}
	if err := s.host.Handle(Role, ProtocolID, s.handle); err != nil {
		return fmt.Errorf("backupstore: %w", err)
	}
	for range provideWorkers {
		s.wg.Go(s.provideLoop)
	}
	s.wg.Go(func() {
		every(s.ctx, s.cfg.RepairInterval.Std(), func() {
			if _, err := s.Repair(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("repair chunks", "err", err)
			}
		})
	})
	s.wg.Go(func() {
		every(s.ctx, s.cfg.GCInterval.Std(), func() {
			if _, err := s.GC(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("collect chunks", "err", err)
			}
		})
	})
	s.log.Info("backup storage serving", "protocol", ProtocolID, "replicas", s.cfg.Replicas, "write_quorum", s.cfg.WriteQuorum,
		"quota_bytes", s.cfg.QuotaBytes, "quota_chunks", s.cfg.QuotaChunks)
	return nil
}

// Stop stops serving and waits for the requests and loops in flight.
func (s *Service) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	if s.cfg.Enabled {
		s.host.Libp2p().RemoveStreamHandler(ProtocolID)
	}
	s.cancel()
	s.wg.Wait()
	s.cs.close()
	return nil
}

// enter registers a request in flight; false once the service stops.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	return true
}

// every runs fn each interval, first one interval from now, until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// PeerID is the node's peer ID: what a device signs an upload to this node for.
func (s *Service) PeerID() peer.ID { return s.host.ID() }

// Config returns the service's configuration.
func (s *Service) Config() Config { return s.cfg }

// PlacementKey is the DHT key whose closest storage nodes hold chunk c:
// its multihash, the key the DHT keeps c's provider records under.
func PlacementKey(c cid.Cid) []byte { return c.Hash() }

// Holders returns the storage nodes that should hold c, closest first, as
// every node computes them: the Replicas nodes that speak ProtocolID
// closest to PlacementKey(c) by XOR distance.
func (s *Service) Holders(ctx context.Context, c cid.Cid) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	peers, err := s.host.ClosestPeers(ctx, PlacementKey(c), s.cfg.Replicas, ProtocolID)
	if err != nil && s.host.RoutingTableSize() == 0 && s.cfg.Enabled {
		// A node alone (a single-node network) is its own storage.
		return []peer.ID{s.host.ID()}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backupstore: holders of %s: %w", c, err)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoStorage, c)
	}
	return peers, nil
}

// verifyAuth checks a against the user's current chain: the signature
// over (a.Entry, what) and, when window is set, the time. Repair forwards
// an authorization made long ago, so it is checked without the window.
func (s *Service) verifyAuth(ctx context.Context, a authorization, what string, window bool) error {
	chain, err := s.users.Lookup(ctx, a.User)
	if err != nil {
		s.met.refusals.WithLabelValues("auth").Inc()
		return fmt.Errorf("%w: user %s: %w", ErrUnauthenticated, a.User, err)
	}
	now := s.now()
	if !window {
		now = a.Time
	}
	if err := a.Verify(a.Entry, what, chain.Set, now); err != nil {
		s.met.refusals.WithLabelValues("auth").Inc()
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return nil
}

// checkChunk checks data against c and, for a manifest, that it decodes
// and is the uploading user's.
func (s *Service) checkChunk(c cid.Cid, data []byte, kind uint8, user e2ee.UserID) error {
	if err := wire.CheckChunk(c, data); err != nil {
		s.met.refusals.WithLabelValues("bad_chunk").Inc()
		return err
	}
	if kind == kindManifest {
		m, err := wire.DecodeManifest(data)
		if err != nil {
			s.met.refusals.WithLabelValues("bad_chunk").Inc()
			return fmt.Errorf("%w: manifest: %w", wire.ErrBadChunk, err)
		}
		if !m.User.Equal(user) {
			s.met.refusals.WithLabelValues("bad_chunk").Inc()
			return fmt.Errorf("%w: manifest of %s uploaded by %s", wire.ErrBadChunk, m.User, user)
		}
	}
	return nil
}

// storeLocal checks and stores one chunk on this node. window: whether the
// authorization must be recent (an upload) or may be old (a repair).
func (s *Service) storeLocal(ctx context.Context, c cid.Cid, data []byte, kind uint8, a authorization, window bool) (bool, error) {
	if !s.cfg.Enabled {
		return false, ErrNotStorage
	}
	if err := s.checkChunk(c, data, kind, a.User); err != nil {
		return false, err
	}
	if err := s.verifyAuth(ctx, a, c.String(), window); err != nil {
		return false, err
	}
	return s.storeChecked(ctx, c, data, kind, a)
}

// storeChecked stores one chunk on this node whose CID, kind and
// authorization have been checked on this node.
func (s *Service) storeChecked(ctx context.Context, c cid.Cid, data []byte, kind uint8, a authorization) (bool, error) {
	if !s.cfg.Enabled {
		return false, ErrNotStorage
	}
	isNew, err := s.cs.put(ctx, c, data, chunkMeta{
		Owner: a.User, Size: uint64(len(data)), Stored: s.now().UnixMilli(), Kind: kind,
		Device: a.Device, Time: a.Time.Unix(), Sig: a.Signature, Entry: a.Entry,
	})
	if errors.Is(err, ErrQuotaExceeded) {
		s.met.refusals.WithLabelValues("quota").Inc()
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("backupstore: store chunk %s: %w", c, err)
	}
	if isNew {
		s.met.stored.Inc()
		s.met.bytes.Add(float64(len(data)))
		select {
		case s.provide <- c:
		default:
		}
	}
	return isNew, nil
}

// Quota is the answer to a preflight check: this node's quotas and what
// the user holds on it.
type Quota struct {
	QuotaBytes  uint64 `json:"quota_bytes"`
	QuotaChunks uint64 `json:"quota_chunks"`
	Usage
}

// Check is the preflight of a backup of bytes bytes in chunks chunks,
// authorized by the device for this node (what = wire.CheckWhat). It fails
// with ErrQuotaExceeded when the backup can never fit: each storage node
// may have to hold every chunk of it (in networks of at most Replicas
// storage nodes it does), so the backup alone must fit the quota, and on
// top of what the user holds on this node.
func (s *Service) Check(ctx context.Context, auth wire.UploadAuth, bytes, chunks uint64) (Quota, error) {
	a := authorization{UploadAuth: auth, Entry: s.host.ID().String()}
	if err := s.verifyAuth(ctx, a, wire.CheckWhat(bytes, chunks), true); err != nil {
		return Quota{}, err
	}
	u, err := s.cs.usage(auth.User)
	if err != nil {
		return Quota{}, fmt.Errorf("backupstore: usage of %s: %w", auth.User, err)
	}
	q := Quota{QuotaBytes: s.cfg.QuotaBytes, QuotaChunks: s.cfg.QuotaChunks, Usage: u}
	if bytes > q.QuotaBytes-min(q.QuotaBytes, u.Bytes) || chunks > q.QuotaChunks-min(q.QuotaChunks, u.Chunks) {
		s.met.refusals.WithLabelValues("quota").Inc()
		return q, fmt.Errorf("%w: a backup of %d bytes in %d chunks does not fit: each storage node allows %d bytes in %d chunks per user, and %s holds %d bytes in %d chunks on this one",
			ErrQuotaExceeded, bytes, chunks, q.QuotaBytes, q.QuotaChunks, auth.User, u.Bytes, u.Chunks)
	}
	return q, nil
}

// Usage returns what user holds on this node.
func (s *Service) Usage(user e2ee.UserID) (Usage, error) { return s.cs.usage(user) }

// Has reports whether this node holds c.
func (s *Service) Has(c cid.Cid) (bool, error) { return s.cs.has(c) }

// Put stores one chunk of auth's user on the storage nodes closest to c,
// each of which checks the chunk, the authorization (signed by the device
// for this node, what = c's text form) and the quota itself, and returns
// once the write quorum has it on disk, with the number of copies stored.
// A manifest (manifest set) must decode and name the user. When the quorum
// fails because of the quota, the copies made are released again.
func (s *Service) Put(ctx context.Context, c cid.Cid, data []byte, manifest bool, auth wire.UploadAuth) (int, error) {
	if s.ctx.Err() != nil {
		return 0, ErrStopped
	}
	kind := kindChunk
	if manifest {
		kind = kindManifest
	}
	a := authorization{UploadAuth: auth, Entry: s.host.ID().String()}
	// The holders are looked up while the chunk and the authorization
	// are checked; nothing is sent before both checks pass.
	var peers []peer.ID
	var lookupErr error
	lookupCtx, cancelLookup := context.WithCancel(ctx)
	defer cancelLookup()
	lookup := make(chan struct{})
	go func() {
		defer close(lookup)
		peers, lookupErr = s.Holders(lookupCtx, c)
	}()
	err := s.checkChunk(c, data, kind, a.User)
	if err == nil {
		err = s.verifyAuth(ctx, a, c.String(), true)
	}
	if err != nil {
		cancelLookup()
		<-lookup
		return 0, err
	}
	<-lookup
	if lookupErr != nil {
		return 0, lookupErr
	}
	quorum := min(s.cfg.WriteQuorum, len(peers))
	type result struct {
		p     peer.ID
		isNew bool
		err   error
	}
	done := make(chan result, len(peers))
	bg := context.WithoutCancel(ctx)
	for _, p := range peers {
		go func() {
			var r result
			r.p = p
			if p == s.host.ID() {
				// Checked above: this node's copy is not hashed and
				// verified twice.
				r.isNew, r.err = s.storeChecked(bg, c, data, kind, a)
			} else {
				r.isNew, r.err = s.storeRemote(bg, p, msgStore, c, data, kind, a)
			}
			done <- r
		}()
	}
	stored, failed := 0, 0
	var results []result
	for stored < quorum && failed <= len(peers)-quorum {
		var r result
		select {
		case r = <-done:
		case <-ctx.Done():
			return stored, ctx.Err()
		}
		results = append(results, r)
		if r.err == nil {
			stored++
		} else {
			failed++
			s.log.Debug("store chunk on storage node failed", "node", r.p.String(), "cid", c.String(), "err", r.err)
		}
	}
	if stored >= quorum {
		return stored, nil
	}
	// Failed: wait for the rest, so that what was stored can be released.
	for len(results) < len(peers) {
		results = append(results, <-done)
	}
	var errs []error
	quota, badChunk, unauth := false, false, false
	for _, r := range results {
		switch {
		case r.err == nil:
			continue
		case errors.Is(r.err, ErrQuotaExceeded):
			quota = true
		case errors.Is(r.err, wire.ErrBadChunk):
			badChunk = true
		case errors.Is(r.err, ErrUnauthenticated):
			unauth = true
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.p, r.err))
	}
	if quota {
		for _, r := range results {
			if r.err == nil && r.isNew {
				s.release(bg, r.p, c, a)
			}
		}
	}
	cause := errors.Join(errs...)
	switch {
	case quota:
		return 0, fmt.Errorf("%w: chunk %s: %w", ErrQuotaExceeded, c, cause)
	case badChunk:
		return 0, fmt.Errorf("%w: chunk %s: %w", wire.ErrBadChunk, c, cause)
	case unauth:
		return 0, fmt.Errorf("%w: chunk %s: %w", ErrUnauthenticated, c, cause)
	}
	return stored, fmt.Errorf("%w: %d of %d storage nodes stored chunk %s: %w", ErrNoQuorum, stored, quorum, c, cause)
}

// release takes back a copy stored by an upload whose quorum failed.
func (s *Service) release(ctx context.Context, p peer.ID, c cid.Cid, a authorization) {
	var err error
	if p == s.host.ID() {
		_, err = s.cs.remove(ctx, c, a.User)
	} else {
		h := header{Type: msgRelease, CID: c.Bytes()}
		a.put(&h)
		_, _, err = s.roundTrip(ctx, p, h, nil, msgOK)
	}
	if err != nil {
		s.log.Warn("release of a chunk whose upload failed", "node", p.String(), "cid", c.String(), "err", err)
	}
}

func (s *Service) storeRemote(ctx context.Context, p peer.ID, typ uint8, c cid.Cid, data []byte, kind uint8, a authorization) (bool, error) {
	h := header{Type: typ, CID: c.Bytes(), Kind: kind}
	a.put(&h)
	r, _, err := s.roundTrip(ctx, p, h, data, msgOK)
	if err != nil {
		return false, err
	}
	return r.New, nil
}

// roundTrip sends one request to storage node p and reads its reply, which
// must be of type want or an error; the reply's chunk is returned for get.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, h header, body []byte, want uint8) (reply, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	st, err := s.host.Libp2p().NewStream(ctx, p, ProtocolID)
	if err != nil {
		return reply{}, nil, fmt.Errorf("backupstore: open stream to %s: %w", p, err)
	}
	defer st.Close()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	if err := writeMessage(st, h, body); err != nil {
		st.Reset()
		return reply{}, nil, fmt.Errorf("backupstore: write to %s: %w", p, err)
	}
	st.CloseWrite()
	br := bufio.NewReader(st)
	b, err := readPart(br, MaxHeaderSize)
	if err != nil {
		st.Reset()
		return reply{}, nil, fmt.Errorf("backupstore: read from %s: %w", p, err)
	}
	r, err := decodeReply(b)
	if err != nil {
		st.Reset()
		return reply{}, nil, fmt.Errorf("backupstore: reply from %s: %w", p, err)
	}
	if r.Type == msgError {
		return reply{}, nil, remoteError(p, r.Code, r.Message)
	}
	if r.Type != want {
		st.Reset()
		return reply{}, nil, fmt.Errorf("%w: reply type %d from %s, want %d", ErrBadFrame, r.Type, p, want)
	}
	var chunk []byte
	if hasBody(r.Type) {
		if chunk, err = readPart(br, wire.MaxChunkSize); err != nil {
			st.Reset()
			return reply{}, nil, fmt.Errorf("backupstore: read chunk from %s: %w", p, err)
		}
	}
	return r, chunk, nil
}

// remoteError maps an error reply to the error callers branch on.
func remoteError(p peer.ID, code, msg string) error {
	var base error
	switch code {
	case codeQuotaExceeded:
		base = ErrQuotaExceeded
	case codeUnauth:
		base = ErrUnauthenticated
	case codeBadChunk:
		base = wire.ErrBadChunk
	case codeNotFound:
		base = ErrNotFound
	case codeNotStorage:
		base = ErrNotStorage
	default:
		base = ErrRemote
	}
	return fmt.Errorf("%w: storage node %s: %s: %s", base, p, code, msg)
}

// codeOf maps an error of a request to its wire code.
func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrQuotaExceeded):
		return codeQuotaExceeded
	case errors.Is(err, ErrUnauthenticated):
		return codeUnauth
	case errors.Is(err, wire.ErrBadChunk):
		return codeBadChunk
	case errors.Is(err, ErrNotFound):
		return codeNotFound
	case errors.Is(err, ErrNotStorage):
		return codeNotStorage
	case errors.Is(err, ErrBadFrame):
		return codeBadRequest
	}
	return codeInternal
}

// Get returns chunk c, checked against c: from this node's store, else
// from the storage nodes closest to c, else from the DHT's providers of c.
func (s *Service) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := wire.CheckChunkCID(c); err != nil {
		return nil, err
	}
	if data, err := s.getLocal(c); err == nil {
		s.met.served.WithLabelValues("local").Inc()
		return data, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	tried := map[peer.ID]bool{s.host.ID(): true}
	var errs []error
	peers, err := s.Holders(ctx, c)
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range peers {
		if tried[p] {
			continue
		}
		tried[p] = true
		data, err := s.getRemote(ctx, p, c)
		if err == nil {
			s.met.served.WithLabelValues("replica").Inc()
			return data, nil
		}
		errs = append(errs, err)
	}
	for _, p := range s.providers(ctx, c) {
		if tried[p] {
			continue
		}
		tried[p] = true
		data, err := s.getRemote(ctx, p, c)
		if err == nil {
			s.met.served.WithLabelValues("provider").Inc()
			return data, nil
		}
		errs = append(errs, err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: chunk %s on %d nodes: %w", ErrNotFound, c, len(tried)-1, errors.Join(errs...))
}

// getLocal reads c from this node's store. A copy that does not match its
// CID is dropped (and counted and logged): it is missing from now on, and
// the repair of another holder restores it.
func (s *Service) getLocal(c cid.Cid) ([]byte, error) {
	return s.getLocalInto(c, func(n int) []byte { return make([]byte, n) })
}

// getLocalInto is getLocal into a buffer from alloc.
func (s *Service) getLocalInto(c cid.Cid, alloc func(n int) []byte) ([]byte, error) {
	data, err := s.cs.getInto(c, alloc)
	if errors.Is(err, errCorrupt) {
		s.met.corrupt.Inc()
		s.log.Error("stored chunk does not match its CID; dropped", "cid", c.String(), "err", err)
		if _, rerr := s.cs.remove(s.ctx, c, e2ee.UserID{}); rerr != nil {
			s.log.Error("drop corrupt chunk", "cid", c.String(), "err", rerr)
		}
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return data, err
}

func (s *Service) getRemote(ctx context.Context, p peer.ID, c cid.Cid) ([]byte, error) {
	_, data, err := s.roundTrip(ctx, p, header{Type: msgGet, CID: c.Bytes()}, nil, msgChunk)
	if err != nil {
		return nil, err
	}
	if err := wire.CheckChunk(c, data); err != nil {
		s.log.Warn("storage node served a chunk that does not match its CID", "node", p.String(), "cid", c.String())
		return nil, fmt.Errorf("backupstore: chunk from %s: %w", p, err)
	}
	return data, nil
}

// providers returns up to maxProviders nodes that announced c in the DHT.
func (s *Service) providers(ctx context.Context, c cid.Cid) []peer.ID {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	var out []peer.ID
	for ai := range s.host.DHT().FindProvidersAsync(ctx, c, maxProviders) {
		if ai.ID != s.host.ID() {
			if len(ai.Addrs) > 0 {
				s.host.Libp2p().Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
			}
			out = append(out, ai.ID)
		}
	}
	return out
}

// Replicas returns the storage nodes that answer that they hold c, asking
// the closest storage nodes and the DHT's providers of c.
func (s *Service) Replicas(ctx context.Context, c cid.Cid) ([]peer.ID, error) {
	if err := wire.CheckChunkCID(c); err != nil {
		return nil, err
	}
	peers, err := s.Holders(ctx, c)
	if err != nil && !errors.Is(err, ErrNoStorage) {
		return nil, err
	}
	for _, p := range s.providers(ctx, c) {
		if !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	held := make([]bool, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			h, err := s.hasOn(ctx, p, []cid.Cid{c})
			held[i] = err == nil && h[0]
		})
	}
	wg.Wait()
	var out []peer.ID
	for i, p := range peers {
		if held[i] {
			out = append(out, p)
		}
	}
	return out, nil
}

// hasOn asks node p (this node included) which of cids it holds.
func (s *Service) hasOn(ctx context.Context, p peer.ID, cids []cid.Cid) ([]bool, error) {
	out := make([]bool, len(cids))
	if p == s.host.ID() {
		if !s.cfg.Enabled {
			return out, nil
		}
		for i, c := range cids {
			ok, err := s.cs.has(c)
			if err != nil {
				return nil, err
			}
			out[i] = ok
		}
		return out, nil
	}
	for start := 0; start < len(cids); start += MaxHasBatch {
		part := cids[start:min(len(cids), start+MaxHasBatch)]
		raw := make([][]byte, len(part))
		for i, c := range part {
			raw[i] = c.Bytes()
		}
		r, _, err := s.roundTrip(ctx, p, header{Type: msgHas, CIDs: raw}, nil, msgHasResult)
		if err != nil {
			return nil, err
		}
		if len(r.Held) != len(part) {
			return nil, fmt.Errorf("%w: %d answers for %d CIDs from %s", ErrBadFrame, len(r.Held), len(part), p)
		}
		copy(out[start:], r.Held)
	}
	return out, nil
}

// handle serves one backup protocol stream.
func (s *Service) handle(st network.Stream) {
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	defer st.Close()
	defer context.AfterFunc(s.ctx, func() { st.Reset() })()
	remote := st.Conn().RemotePeer()
	st.SetDeadline(time.Now().Add(RequestTimeout))
	br := bufio.NewReader(st)
	b, err := readPart(br, MaxHeaderSize)
	if err != nil {
		s.refuse(st, err)
		return
	}
	req, err := decodeRequest(b)
	if err != nil {
		s.met.refusals.WithLabelValues("bad_request").Inc()
		s.log.Debug("refused backup request", "peer", remote.String(), "err", err)
		s.refuse(st, err)
		return
	}
	var body []byte
	if hasBody(req.Type) {
		// The chunk is committed (or refused) before the handler returns:
		// its buffer goes back to the pool then.
		if body, err = readPartInto(br, wire.MaxChunkSize, getBuffer); err != nil {
			s.refuse(st, err)
			return
		}
		defer putBuffer(body)
	}
	ctx, cancel := context.WithTimeout(s.ctx, RequestTimeout)
	defer cancel()
	switch req.Type {
	case msgStore, msgRelease:
		// The device signed for the node that forwards: no node can pass
		// on an authorization it was not given.
		if req.Auth.Entry != remote.String() {
			s.met.refusals.WithLabelValues("auth").Inc()
			s.refuse(st, fmt.Errorf("%w: authorization for node %s forwarded by %s", ErrUnauthenticated, req.Auth.Entry, remote))
			return
		}
		if req.Type == msgRelease {
			if err := s.verifyAuth(ctx, req.Auth, req.CID.String(), true); err != nil {
				s.refuse(st, err)
				return
			}
			if _, err := s.cs.remove(ctx, req.CID, req.Auth.User); err != nil {
				s.refuse(st, err)
				return
			}
			s.reply(st, header{Type: msgOK}, nil)
			return
		}
		fallthrough
	case msgReplicate:
		isNew, err := s.storeLocal(ctx, req.CID, body, req.Kind, req.Auth, req.Type == msgStore)
		if err != nil {
			s.log.Debug("refused chunk", "peer", remote.String(), "cid", req.CID.String(), "err", err)
			s.refuse(st, err)
			return
		}
		s.reply(st, header{Type: msgOK, New: isNew}, nil)
	case msgGet:
		if !s.cfg.Enabled {
			s.refuse(st, ErrNotStorage)
			return
		}
		data, err := s.getLocalInto(req.CID, getBuffer)
		if err != nil {
			s.refuse(st, err)
			return
		}
		s.reply(st, header{Type: msgChunk}, data) // the stream copies what it sends
		putBuffer(data)
	case msgHas:
		held, err := s.hasOn(ctx, s.host.ID(), req.CIDs)
		if err != nil {
			s.refuse(st, err)
			return
		}
		out := make([]byte, len(held))
		for i, h := range held {
			if h {
				out[i] = 1
			}
		}
		s.reply(st, header{Type: msgHasResult, Held: out}, nil)
	}
}

func (s *Service) reply(st network.Stream, h header, body []byte) {
	if err := writeMessage(st, h, body); err != nil {
		st.Reset()
	}
}

func (s *Service) refuse(st network.Stream, err error) {
	code := codeOf(err)
	msg := err.Error()
	if code == codeInternal {
		s.log.Warn("backup request failed", "peer", st.Conn().RemotePeer().String(), "err", err)
		msg = "internal error"
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	s.reply(st, header{Type: msgError, Code: code, Message: msg}, nil)
}

// provideLoop announces newly stored chunks in the DHT.
func (s *Service) provideLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case c := <-s.provide:
			s.announce(s.ctx, c)
		}
	}
}

func (s *Service) announce(ctx context.Context, c cid.Cid) {
	ctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	if err := s.host.DHT().Provide(ctx, c, true); err != nil && s.host.RoutingTableSize() > 0 {
		s.log.Debug("provide chunk", "cid", c.String(), "err", err)
	}
}

// PutPointer checks a pointer record (decoded, signed by a device of the
// chain it carries, that device not revoked in the newest chain this node
// finds, not older than the pointer stored here), stores it and puts it in
// the DHT.
func (s *Service) PutPointer(ctx context.Context, encoded []byte) (wire.PointerRecord, error) {
	r, err := wire.DecodePointerRecord(encoded)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	if err := r.Verify(); err != nil {
		return wire.PointerRecord{}, err
	}
	if cur, err := s.users.Lookup(ctx, r.Pointer.User); err == nil {
		if _, ok := cur.Set.Lookup(r.Pointer.Device); !ok && cur.Set.Version() > 0 {
			return wire.PointerRecord{}, fmt.Errorf("%w: %s is not a current device of %s", wire.ErrBadPointer, r.Pointer.Device, r.Pointer.User)
		}
	}
	if err := s.cs.putPointer(r, encoded); err != nil {
		return wire.PointerRecord{}, err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PublishTimeout)
	defer cancel()
	if err := s.host.DHT().PutValue(pctx, wire.PointerKey(r.Pointer.User), encoded); err != nil && s.host.RoutingTableSize() > 0 {
		s.log.Warn("DHT put of a backup pointer failed; the republish will retry", "user", r.Pointer.User.String(), "err", err)
	}
	return r, nil
}

// Pointer returns the newest pointer record of user this node finds, in
// its store or in the DHT, encoded.
func (s *Service) Pointer(ctx context.Context, user e2ee.UserID) ([]byte, error) {
	local, lb, lerr := s.cs.pointer(user)
	if lerr != nil && !errors.Is(lerr, ErrNotFound) {
		s.log.Error("stored backup pointer", "user", user.String(), "err", lerr)
	}
	remote, rb, rerr := s.fetchPointer(ctx, user)
	switch {
	case lerr == nil && rerr == nil:
		if remote.Pointer.After(local.Pointer) {
			return rb, nil
		}
		return lb, nil
	case lerr == nil:
		return lb, nil
	case rerr == nil:
		return rb, nil
	}
	return nil, fmt.Errorf("%w: backup pointer of %s: %w", ErrNotFound, user, rerr)
}

// fetchPointer reads user's pointer from the DHT and verifies it.
func (s *Service) fetchPointer(ctx context.Context, user e2ee.UserID) (wire.PointerRecord, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	b, err := s.host.DHT().GetValue(ctx, wire.PointerKey(user))
	if err != nil {
		return wire.PointerRecord{}, nil, err
	}
	r, err := decodePointer(b, user)
	if err != nil {
		return wire.PointerRecord{}, nil, err
	}
	return r, b, nil
}

// Republish puts every stored pointer in the DHT again and announces every
// held chunk again, well inside the records' lifetime.
func (s *Service) Republish(ctx context.Context) {
	recs, err := s.cs.pointers()
	if err != nil {
		s.log.Error("republish pointers", "err", err)
	}
	for _, b := range recs {
		r, err := wire.DecodePointerRecord(b)
		if err != nil {
			s.log.Error("republish: stored pointer does not decode", "err", err)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, PublishTimeout)
		err = s.host.DHT().PutValue(pctx, wire.PointerKey(r.Pointer.User), b)
		cancel()
		if err != nil {
			s.log.Warn("republish pointer", "user", r.Pointer.User.String(), "err", err)
		}
	}
	if !s.cfg.Enabled {
		return
	}
	held, err := s.cs.list()
	if err != nil {
		s.log.Error("republish chunks", "err", err)
		return
	}
	for _, h := range held {
		if ctx.Err() != nil {
			return
		}
		s.announce(ctx, h.CID)
	}
}

// Repair checks, for every chunk this node holds, that its closest storage
// nodes hold it, and pushes it to those that do not: the holder closest
// to the chunk among those that answer does the pushing. A chunk this node
// is no longer among the closest for is pushed to them and, once all of
// them hold it, deleted here. It returns the number of copies pushed.
func (s *Service) Repair(ctx context.Context) (int, error) {
	held, err := s.cs.list()
	if err != nil {
		return 0, fmt.Errorf("backupstore: repair: %w", err)
	}
	self := s.host.ID()
	type plan struct {
		chunk heldChunk
		peers []peer.ID
	}
	var plans []plan
	ask := make(map[peer.ID][]cid.Cid)
	var errs []error
	for _, h := range held {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		peers, err := s.Holders(ctx, h.CID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plans = append(plans, plan{h, peers})
		for _, p := range peers {
			if p != self {
				ask[p] = append(ask[p], h.CID)
			}
		}
	}
	holds := make(map[peer.ID]map[cid.Cid]bool)
	for p, cids := range ask {
		res, err := s.hasOn(ctx, p, cids)
		m := make(map[cid.Cid]bool, len(cids))
		if err != nil {
			s.log.Debug("repair: has", "node", p.String(), "err", err)
		} else {
			for i, c := range cids {
				m[c] = res[i]
			}
		}
		holds[p] = m // a node that does not answer is not pushed to
		if err != nil {
			delete(holds, p)
		}
	}
	pushed := 0
	for _, pl := range plans {
		c := pl.chunk.CID
		inSet := slices.Contains(pl.peers, self)
		var missing []peer.ID
		first := peer.ID("")
		for _, p := range pl.peers {
			switch {
			case p == self:
				if first == "" {
					first = self
				}
			case holds[p] == nil:
				// no answer: neither a holder nor a target this round
			case holds[p][c]:
				if first == "" {
					first = p
				}
			default:
				missing = append(missing, p)
			}
		}
		if inSet && first != self {
			continue // a closer holder repairs
		}
		if len(missing) == 0 {
			if !inSet && first != "" && len(holds) > 0 && s.allHold(pl.peers, holds, c) {
				s.handOver(c)
			}
			continue
		}
		data, err := s.getLocal(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range missing {
			if _, err := s.storeRemote(ctx, p, msgReplicate, c, data, pl.chunk.Meta.Kind, pl.chunk.Meta.auth()); err != nil {
				errs = append(errs, fmt.Errorf("push %s to %s: %w", c, p, err))
				continue
			}
			holds[p][c] = true
			pushed++
			s.met.repairs.Inc()
		}
		if !inSet && s.allHold(pl.peers, holds, c) {
			s.handOver(c)
		}
	}
	if pushed > 0 {
		s.log.Info("repaired chunks", "copies_pushed", pushed)
	}
	return pushed, errors.Join(errs...)
}

// allHold reports whether every one of peers answered that it holds c.
func (s *Service) allHold(peers []peer.ID, holds map[peer.ID]map[cid.Cid]bool, c cid.Cid) bool {
	for _, p := range peers {
		if p == s.host.ID() || holds[p] == nil || !holds[p][c] {
			return false
		}
	}
	return true
}

// handOver deletes a chunk this node no longer should hold and its closest
// nodes all hold.
func (s *Service) handOver(c cid.Cid) {
	if ok, err := s.cs.remove(s.ctx, c, e2ee.UserID{}); err != nil {
		s.log.Warn("delete handed-over chunk", "cid", c.String(), "err", err)
	} else if ok {
		s.met.handedOver.Inc()
	}
}

// GC deletes the chunks no backup refers to: for each user holding chunks
// here, the chunks older than GCGrace that are neither the manifest named
// by the user's newest pointer, nor listed by it, nor listed by a manifest
// of the user stored here within GCGrace. A user whose pointer or manifest
// cannot be read keeps every chunk. It returns the number deleted.
func (s *Service) GC(ctx context.Context) (int, error) { return s.GCAt(ctx, s.now()) }

// GCAt is GC as if the time were now: how the tests show what GC keeps
// and deletes once the grace period has passed.
func (s *Service) GCAt(ctx context.Context, now time.Time) (int, error) {
	held, err := s.cs.list()
	if err != nil {
		return 0, fmt.Errorf("backupstore: gc: %w", err)
	}
	byOwner := make(map[e2ee.UserID][]heldChunk)
	for _, h := range held {
		byOwner[h.Meta.Owner] = append(byOwner[h.Meta.Owner], h)
	}
	grace := s.cfg.GCGrace.Std()
	deleted := 0
	var errs []error
	for owner, chunks := range byOwner {
		if ctx.Err() != nil {
			return deleted, ctx.Err()
		}
		live, err := s.liveSet(ctx, owner, chunks, now, grace)
		if err != nil {
			s.log.Info("gc: keeping every chunk of a user whose backup cannot be read", "user", owner.String(), "err", err)
			continue
		}
		for _, c := range collectable(chunks, live, now, grace) {
			size := uint64(0)
			if m, ok, _ := s.cs.meta(c); ok {
				size = m.Size
			}
			ok, err := s.cs.remove(ctx, c, owner)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				deleted++
				s.met.gcDeleted.Inc()
				s.met.gcBytes.Add(float64(size))
			}
		}
	}
	if deleted > 0 {
		s.log.Info("collected chunks no backup refers to", "chunks", deleted)
	}
	return deleted, errors.Join(errs...)
}

// liveSet is the set of CIDs of owner that GC keeps: the newest pointer's
// manifest and its chunks, and the chunks of the owner's manifests stored
// here within grace.
func (s *Service) liveSet(ctx context.Context, owner e2ee.UserID, chunks []heldChunk, now time.Time, grace time.Duration) (map[cid.Cid]bool, error) {
	live := make(map[cid.Cid]bool)
	for _, h := range chunks {
		if h.Meta.Kind != kindManifest || now.Sub(time.UnixMilli(h.Meta.Stored)) > grace {
			continue
		}
		data, err := s.getLocal(h.CID)
		if err != nil {
			continue
		}
		m, err := wire.DecodeManifest(data)
		if err != nil {
			continue
		}
		for _, mc := range m.Chunks {
			live[mc.CID] = true
		}
	}
	b, err := s.Pointer(ctx, owner)
	if errors.Is(err, ErrNotFound) && errors.Is(err, routing.ErrNotFound) {
		return live, nil // no backup pointer at all: nothing old is referenced
	}
	if err != nil {
		return nil, err
	}
	r, err := wire.DecodePointerRecord(b)
	if err != nil {
		return nil, err
	}
	live[r.Pointer.Manifest] = true
	data, err := s.Get(ctx, r.Pointer.Manifest)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	m, err := wire.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", r.Pointer.Manifest, err)
	}
	for _, mc := range m.Chunks {
		live[mc.CID] = true
	}
	return live, nil
}

// collectable is GC's decision: the chunks older than grace at now that
// are not in live.
func collectable(chunks []heldChunk, live map[cid.Cid]bool, now time.Time, grace time.Duration) []cid.Cid {
	var out []cid.Cid
	for _, h := range chunks {
		if now.Sub(time.UnixMilli(h.Meta.Stored)) > grace && !live[h.CID] {
			out = append(out, h.CID)
		}
	}
	return out
}
