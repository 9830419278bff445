package relay

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

// Envelope and EnvelopeID are the wire types the relay carries.
type (
	Envelope   = wire.Envelope
	EnvelopeID = wire.EnvelopeID
)

// Service limits and intervals.
const (
	// placementTTL is how long Send and Ack reuse the relays found for a
	// mailbox before asking the DHT again.
	placementTTL = 30 * time.Second
	// maxPlacements bounds the cached placements; past it the cache
	// starts again empty.
	maxPlacements = 1 << 14
	// resolveInterval is how often a subscription looks the device's
	// relays up again, to follow churn.
	resolveInterval = 30 * time.Second
	// retryMin and retryMax bound the wait before a subscription opens a
	// failed relay stream again.
	retryMin = 250 * time.Millisecond
	retryMax = 15 * time.Second
	// lookupTimeout bounds one closest-peers lookup.
	lookupTimeout = 15 * time.Second
)

// mailboxKeyPrefix is what MailboxKey hashes before the device ID.
const mailboxKeyPrefix = "volo/mailbox/"

// MailboxKey is the DHT key whose closest relays hold device's mailbox:
// sha256("volo/mailbox/" + device ID text).
func MailboxKey(d e2ee.DeviceID) []byte {
	h := sha256.Sum256([]byte(mailboxKeyPrefix + d.String()))
	return h[:]
}

// SendResult is the fate of one envelope of a Send.
type SendResult struct {
	// Stored is the number of relays that have the envelope on disk.
	Stored int
	// Err is nil once WriteQuorum relays have it; else wire.ErrMailboxFull,
	// wire.ErrExpired, wire.ErrBadEnvelope or ErrNoQuorum.
	Err error
}

// Option changes how NewService builds the service.
type Option func(*Service)

// WithClock sets the clock the mailboxes and the expiry loop read (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// Service is a node's relay: it serves ProtocolID from its mailboxes when
// enabled, and places, fetches and acknowledges envelopes on the relays of
// any device for the node's clients.
type Service struct {
	cfg  Config
	host *p2p.Host
	box  *Mailboxes
	log  *slog.Logger
	now  func() time.Time
	met  *metrics

	ctx    context.Context // lives from NewService until Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	place   map[string]placement
	queues  map[peer.ID]chan *storeJob
}

// storeJob is a batch of envelopes waiting for a stream to their relay.
type storeJob struct {
	envs []Envelope
	errs []error
	done chan struct{}
}

// storeQueued writes envs to relay p through its queue: concurrent sends
// to one relay share streams and frames (at most streamsPerRelay streams
// at a time), as the relay's group commit shares its fsyncs.
func (s *Service) storeQueued(ctx context.Context, p peer.ID, envs []Envelope) []error {
	j := &storeJob{envs: envs, done: make(chan struct{})}
	s.mu.Lock()
	q, ok := s.queues[p]
	if !ok && !s.stopped {
		q = make(chan *storeJob, maxQueuedOps)
		s.queues[p] = q
		for range streamsPerRelay {
			s.wg.Go(func() { s.storeWorker(p, q) })
		}
	}
	s.mu.Unlock()
	fail := func(err error) []error {
		errs := make([]error, len(envs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if q == nil {
		return fail(ErrStopped)
	}
	select {
	case q <- j:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-s.ctx.Done():
		return fail(ErrStopped)
	}
	select {
	case <-j.done:
		return j.errs
	case <-ctx.Done():
		return fail(ctx.Err())
	}
}

func (s *Service) storeWorker(p peer.ID, q chan *storeJob) {
	for {
		var jobs []*storeJob
		select {
		case j := <-q:
			jobs = append(jobs, j)
		case <-s.ctx.Done():
			return
		}
		n, size := len(jobs[0].envs), batchSize(jobs[0].envs)
	drain:
		for n < MaxBatch {
			select {
			case j := <-q:
				jobs = append(jobs, j)
				n += len(j.envs)
				size += batchSize(j.envs)
				if n >= MaxBatch || size >= batchBytes/2 {
					break drain
				}
			default:
				break drain
			}
		}
		// A drained job may overflow the frame: send in frame-sized runs.
		for len(jobs) > 0 {
			run, count, bytes := 1, len(jobs[0].envs), batchSize(jobs[0].envs)
			for run < len(jobs) && count+len(jobs[run].envs) <= MaxBatch && bytes+batchSize(jobs[run].envs) <= batchBytes {
				count += len(jobs[run].envs)
				bytes += batchSize(jobs[run].envs)
				run++
			}
			var all []Envelope
			for _, j := range jobs[:run] {
				all = append(all, j.envs...)
			}
			errs := s.storeRemote(s.ctx, p, msgStore, e2ee.DeviceID{}, all)
			for _, j := range jobs[:run] {
				j.errs, errs = errs[:len(j.envs)], errs[len(j.envs):]
				close(j.done)
			}
			jobs = jobs[run:]
		}
	}
}

func batchSize(envs []Envelope) int {
	n := 0
	for _, e := range envs {
		n += len(e.Ciphertext) + 256
	}
	return n
}

// streamsPerRelay bounds the store streams open to one relay at a time.
const streamsPerRelay = 4

type placement struct {
	peers []peer.ID
	at    time.Time
}

// NewService builds the relay over view, the relay's part of the node's
// store. It serves nothing until Start.
func NewService(cfg Config, host *p2p.Host, view *store.Prefixed, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, host: host, log: log, now: time.Now, place: make(map[string]placement), queues: make(map[peer.ID]chan *storeJob)}
	for _, o := range opts {
		o(s)
	}
	s.box = NewMailboxes(view, cfg.MailboxCap, s.now)
	s.box.maxTTL = cfg.MaxTTL.Std()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	met, err := newMetrics(reg, s.box)
	if err != nil {
		s.cancel()
		s.box.Close()
		return nil, err
	}
	s.met = met
	return s, nil
}

// Start serves ProtocolID (when the relay is enabled) and starts the
// expiry and rebalance loops.
func (s *Service) Start(ctx context.Context) error {
	if !s.cfg.Enabled {
		return nil
	}
	if err := s.host.Handle(Role, ProtocolID, s.handle); err != nil {
		return err
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		every(s.ctx, s.cfg.ExpireInterval.Std(), s.expire)
	}()
	go func() {
		defer s.wg.Done()
		every(s.ctx, s.cfg.RebalanceInterval.Std(), func() {
			if err := s.Rebalance(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("rebalance mailboxes", "err", err)
			}
		})
	}()
	s.log.Info("relay serving", "protocol", ProtocolID, "replicas", s.cfg.Replicas, "write_quorum", s.cfg.WriteQuorum)
	return nil
}

// expire deletes the envelopes whose TTL has passed.
func (s *Service) expire() {
	n, err := s.box.Expire(s.now())
	s.met.expired.Add(float64(n))
	if err != nil {
		s.log.Warn("expire envelopes", "err", err)
	} else if n > 0 {
		s.log.Debug("expired envelopes", "count", n)
	}
}

// every runs fn every interval until ctx ends.
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

// Stop stops serving, ends subscriptions, waits for the requests in
// flight and closes the mailboxes.
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
	s.box.Close()
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

// Local is this node's own mailboxes.
func (s *Service) Local() *Mailboxes { return s.box }

// Relays returns the relays of device's mailbox, closest first, as every
// node computes them: the Replicas nodes that speak ProtocolID closest to
// MailboxKey(device) by XOR distance.
func (s *Service) Relays(ctx context.Context, device e2ee.DeviceID) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	peers, err := s.host.ClosestPeers(ctx, MailboxKey(device), s.cfg.Replicas, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("relay: relays of %s: %w", device, err)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNoRelays, device)
	}
	s.mu.Lock()
	if len(s.place) >= maxPlacements {
		clear(s.place)
	}
	s.place[string(device.Bytes())] = placement{peers: peers, at: time.Now()}
	s.mu.Unlock()
	return peers, nil
}

// cachedRelays is Relays, reusing a lookup younger than placementTTL.
func (s *Service) cachedRelays(ctx context.Context, device e2ee.DeviceID) ([]peer.ID, error) {
	s.mu.Lock()
	p, ok := s.place[string(device.Bytes())]
	s.mu.Unlock()
	if ok && time.Since(p.at) < placementTTL {
		return p.peers, nil
	}
	return s.Relays(ctx, device)
}

// quorum is the write quorum for a mailbox with n relays: WriteQuorum, or
// every relay when the network has fewer.
func (s *Service) quorum(n int) int { return min(s.cfg.WriteQuorum, n) }

// Send places each envelope on the relays of its device and returns once
// WriteQuorum of them have it durably, or with the envelope's error. An
// envelope without a TTL gets DefaultTTL. Writes to relays that have not
// answered when Send returns go on in the background.
func (s *Service) Send(ctx context.Context, envs []Envelope) ([]SendResult, error) {
	if s.ctx.Err() != nil {
		return nil, ErrStopped
	}
	results := make([]SendResult, len(envs))
	envs = slices.Clone(envs)
	byDevice := make(map[string][]int)
	var order []string
	for i := range envs {
		if envs[i].TTL == 0 {
			envs[i].TTL = s.cfg.DefaultTTL.Std()
		}
		if err := envs[i].Check(); err != nil {
			results[i].Err = err
			continue
		}
		if envs[i].TTL > s.cfg.MaxTTL.Std() {
			results[i].Err = fmt.Errorf("%w: TTL %s above %s", wire.ErrBadEnvelope, envs[i].TTL, s.cfg.MaxTTL)
			continue
		}
		k := string(envs[i].To.Bytes())
		if byDevice[k] == nil {
			order = append(order, k)
		}
		byDevice[k] = append(byDevice[k], i)
	}

	// The writes of each relay, and how many relays each envelope waits on.
	type write struct {
		idx []int
		err []error
	}
	perPeer := make(map[peer.ID][]int)
	need := make([]int, len(envs))
	quorum := make([]int, len(envs))
	for _, k := range order {
		idx := byDevice[k]
		peers, err := s.cachedRelays(ctx, envs[idx[0]].To)
		if err != nil {
			for _, i := range idx {
				results[i].Err = fmt.Errorf("%w: %w", ErrNoQuorum, err)
			}
			continue
		}
		for _, i := range idx {
			need[i], quorum[i] = len(peers), s.quorum(len(peers))
		}
		for _, p := range peers {
			perPeer[p] = append(perPeer[p], idx...)
		}
	}
	done := make(chan write, len(perPeer))
	bg := context.WithoutCancel(ctx)
	for p, idx := range perPeer {
		go func() {
			errs := s.storeOn(bg, p, envs, idx)
			done <- write{idx: idx, err: errs}
		}()
	}

	// Collect until every envelope has its quorum or all its answers.
	answered := make([]int, len(envs))
	failure := make([]error, len(envs))
	open := 0
	for i := range envs {
		if need[i] > 0 {
			open++
		}
	}
	decided := func(i int) bool { return results[i].Stored >= quorum[i] || answered[i] == need[i] }
	for pending := len(perPeer); open > 0 && pending > 0; pending-- {
		var w write
		select {
		case w = <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for j, i := range w.idx {
			if decided(i) {
				if w.err[j] == nil {
					results[i].Stored++ // a copy beyond the quorum still counts
				}
				answered[i]++
				continue
			}
			answered[i]++
			if w.err[j] == nil {
				results[i].Stored++
			} else if failure[i] == nil || !errors.Is(failure[i], wire.ErrMailboxFull) {
				failure[i] = w.err[j]
			}
			if decided(i) {
				open--
			}
		}
	}
	stored := 0
	for i := range envs {
		if need[i] == 0 || results[i].Err != nil {
			continue
		}
		if results[i].Stored >= quorum[i] {
			stored++
			continue
		}
		switch f := failure[i]; {
		case errors.Is(f, wire.ErrMailboxFull), errors.Is(f, wire.ErrExpired), errors.Is(f, wire.ErrBadEnvelope):
			results[i].Err = f
		default:
			results[i].Err = fmt.Errorf("%w: %d of %d relays stored envelope %s (last error: %v)", ErrNoQuorum, results[i].Stored, quorum[i], envs[i].ID, f)
		}
	}
	s.log.Debug("sent envelopes", "count", len(envs), "stored", stored, "relays", len(perPeer))
	return results, nil
}

// storeOn writes envs[idx] to relay p (the local mailboxes when p is this
// node) and returns one error per envelope, nil where it is on disk.
func (s *Service) storeOn(ctx context.Context, p peer.ID, envs []Envelope, idx []int) []error {
	errs := make([]error, len(idx))
	batch := make([]Envelope, 0, min(len(idx), MaxBatch))
	start, size := 0, 0
	flush := func(end int) {
		if len(batch) == 0 {
			return
		}
		var res []error
		if p == s.host.ID() {
			res = s.storeLocal(ctx, batch)
		} else {
			res = s.storeQueued(ctx, p, batch)
		}
		copy(errs[start:end], res)
		start, size, batch = end, 0, batch[:0]
	}
	for j, i := range idx {
		n := len(envs[i].Ciphertext) + 256
		if len(batch) == MaxBatch || (len(batch) > 0 && size+n > batchBytes) {
			flush(j)
		}
		batch = append(batch, envs[i])
		size += n
	}
	flush(len(idx))
	return errs
}

func (s *Service) storeLocal(ctx context.Context, envs []Envelope) []error {
	errs := make([]error, len(envs))
	if !s.cfg.Enabled {
		for i := range errs {
			errs[i] = fmt.Errorf("%w: this node is not a relay", ErrRemote)
		}
		return errs
	}
	res, err := s.box.Put(ctx, envs)
	stored := 0
	for i := range errs {
		switch {
		case err != nil:
			errs[i] = err
		case res[i].Err != nil:
			errs[i] = res[i].Err
		case !res[i].Duplicate:
			stored++
		}
	}
	s.met.stored.Add(float64(stored))
	return errs
}

func (s *Service) storeRemote(ctx context.Context, p peer.ID, typ uint8, device e2ee.DeviceID, envs []Envelope) []error {
	errs := make([]error, len(envs))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	f, err := storeFrame(typ, device, envs)
	if err != nil {
		return fail(err)
	}
	r, err := s.roundTrip(ctx, p, f, msgStoreResult)
	if err != nil {
		s.log.Debug("store on relay failed", "relay", p.String(), "envelopes", len(envs), "err", err)
		return fail(err)
	}
	if len(r.Results) != len(envs) {
		return fail(fmt.Errorf("%w: %d results for %d envelopes", ErrBadFrame, len(r.Results), len(envs)))
	}
	for i, c := range r.Results {
		errs[i] = errOf(c)
	}
	return errs
}

// roundTrip sends one request to relay p and reads its reply, which must
// be of type want or an error frame.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, f frame, want uint8) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	st, err := s.host.Libp2p().NewStream(ctx, p, ProtocolID)
	if err != nil {
		return reply{}, fmt.Errorf("relay: open stream to %s: %w", p, err)
	}
	defer st.Close()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	if err := writeFrame(st, f); err != nil {
		st.Reset()
		return reply{}, fmt.Errorf("relay: write to %s: %w", p, err)
	}
	st.CloseWrite()
	b, err := readFrame(bufio.NewReader(st))
	if err != nil {
		st.Reset()
		return reply{}, fmt.Errorf("relay: read from %s: %w", p, err)
	}
	r, err := decodeReply(b)
	if err != nil {
		return reply{}, fmt.Errorf("relay: reply from %s: %w", p, err)
	}
	if r.Type == msgError {
		if r.Code == codeBadAck {
			return reply{}, fmt.Errorf("%w: relay %s: %s", ErrBadAck, p, r.Message)
		}
		return reply{}, fmt.Errorf("%w: %s: %s: %s", ErrRemote, p, r.Code, r.Message)
	}
	if r.Type != want {
		return reply{}, fmt.Errorf("%w: reply type %d from %s, want %d", ErrBadFrame, r.Type, p, want)
	}
	return r, nil
}

// Ack deletes envelopes on every relay of the device. sig is the device's
// signature (wire.DomainAck) over wire.AckMessage(dev.ID(), ids); this node
// and every relay verify it. Ack succeeds when at least one relay deleted
// or confirmed; the errors of the others are logged.
func (s *Service) Ack(ctx context.Context, dev e2ee.DevicePublic, ids []EnvelopeID, sig []byte) error {
	if len(ids) == 0 || len(ids) > MaxAckIDs {
		return fmt.Errorf("%w: %d envelope IDs, want 1 to %d", ErrBadAck, len(ids), MaxAckIDs)
	}
	if err := verifyAck(dev, ids, sig); err != nil {
		return err
	}
	device := dev.ID()
	peers, err := s.cachedRelays(ctx, device)
	if err != nil {
		return err
	}
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			if p == s.host.ID() {
				if !s.cfg.Enabled {
					errs[i] = fmt.Errorf("%w: this node is not a relay", ErrRemote)
					return
				}
				n, err := s.box.Ack(device, ids)
				s.met.acked.Add(float64(n))
				errs[i] = err
				return
			}
			_, errs[i] = s.roundTrip(ctx, p, ackFrame(dev, ids, sig), msgAckResult)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
		} else {
			s.log.Debug("ack on relay failed", "relay", peers[i].String(), "device", device.String(), "err", err)
		}
	}
	if ok == 0 {
		return fmt.Errorf("relay: ack on no relay: %w", errors.Join(errs...))
	}
	return nil
}

// Subscribe delivers the device's pending envelopes, from each of its
// relays in that relay's order, deduplicated by envelope ID, and then new
// ones as they arrive, by calling deliver (never concurrently) until ctx
// ends; it then returns ctx's error. Relays are looked up again every
// resolveInterval, and a relay whose stream fails is retried with backoff.
func (s *Service) Subscribe(ctx context.Context, device e2ee.DeviceID, deliver func([]Envelope)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := &subscription{deliver: deliver, seen: newSeenSet(2 * s.cfg.MailboxCap * s.cfg.Replicas), met: s.met, now: s.now}
	following := make(map[peer.ID]context.CancelFunc)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrStopped
		case <-t.C:
		}
		peers, err := s.Relays(ctx, device)
		if err != nil {
			s.log.Debug("subscribe: look up relays", "device", device.String(), "err", err)
		}
		for _, p := range peers {
			if following[p] != nil {
				continue
			}
			fctx, fcancel := context.WithCancel(ctx)
			following[p] = fcancel
			wg.Go(func() { s.follow(fctx, p, device, sub) })
		}
		for p, stop := range following {
			if err == nil && !slices.Contains(peers, p) {
				stop()
				delete(following, p)
			}
		}
		t.Reset(resolveInterval)
	}
}

// follow delivers what relay p holds for device until ctx ends, opening
// the stream again after failures.
func (s *Service) follow(ctx context.Context, p peer.ID, device e2ee.DeviceID, sub *subscription) {
	wait := retryMin
	for ctx.Err() == nil && s.ctx.Err() == nil {
		var err error
		if p == s.host.ID() {
			if !s.cfg.Enabled {
				return
			}
			err = s.pump(ctx, device, func(envs []Envelope) error { sub.offer(envs); return nil })
		} else {
			err = s.followRemote(ctx, p, device, sub, func() { wait = retryMin })
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("subscription to relay ended", "relay", p.String(), "device", device.String(), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

func (s *Service) followRemote(ctx context.Context, p peer.ID, device e2ee.DeviceID, sub *subscription, healthy func()) error {
	octx, cancel := context.WithTimeout(ctx, SubscribeOpenTimeout)
	st, err := s.host.Libp2p().NewStream(octx, p, ProtocolID)
	cancel()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	defer st.Close()
	st.SetWriteDeadline(time.Now().Add(SubscribeOpenTimeout))
	if err := writeFrame(st, frame{Type: msgSubscribe, Device: device.Bytes()}); err != nil {
		st.Reset()
		return err
	}
	// The write side stays open: the relay takes its end (EOF or reset)
	// as the subscriber leaving.
	st.SetWriteDeadline(time.Time{})
	br := bufio.NewReader(st)
	for {
		b, err := readFrame(br)
		if err != nil {
			st.Reset()
			return err
		}
		r, err := decodeReply(b)
		if err != nil {
			st.Reset()
			return err
		}
		switch r.Type {
		case msgPush:
			for _, e := range r.Envelopes {
				if !e.To.Equal(device) {
					st.Reset()
					return fmt.Errorf("%w: relay %s pushed an envelope for another device", ErrBadFrame, p)
				}
			}
			healthy()
			sub.offer(r.Envelopes)
		case msgError:
			return fmt.Errorf("%w: %s: %s", ErrRemote, r.Code, r.Message)
		default:
			st.Reset()
			return fmt.Errorf("%w: reply type %d to a subscription", ErrBadFrame, r.Type)
		}
	}
}

// pump emits the envelopes of device's local mailbox in order, then new
// ones as they are stored, until ctx ends or emit fails.
func (s *Service) pump(ctx context.Context, device e2ee.DeviceID, emit func([]Envelope) error) error {
	woken, unwatch := s.box.watch(device)
	defer unwatch()
	var after uint64
	for {
		stored, err := s.box.List(device, after, MaxBatch)
		if err != nil {
			return err
		}
		if len(stored) > 0 {
			envs := make([]Envelope, len(stored))
			size := 0
			for i, st := range stored {
				size += len(st.Envelope.Ciphertext) + 256
				if i > 0 && size > batchBytes {
					envs, stored = envs[:i], stored[:i]
					break
				}
				envs[i] = st.Envelope
			}
			if err := emit(envs); err != nil {
				return err
			}
			after = stored[len(stored)-1].Seq
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-woken:
		}
	}
}

// subscription merges what a device's relays deliver.
type subscription struct {
	mu      sync.Mutex
	deliver func([]Envelope)
	seen    *seenSet
	met     *metrics
	now     func() time.Time
}

// offer delivers the envelopes not seen before, in the order given.
func (sub *subscription) offer(envs []Envelope) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	fresh := envs[:0:0]
	for _, e := range envs {
		if sub.seen.add(e.ID) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 {
		return
	}
	now := sub.now()
	for _, e := range fresh {
		sub.met.latency.Observe(max(0, now.Sub(e.Time).Seconds()))
	}
	sub.met.delivered.Add(float64(len(fresh)))
	sub.deliver(fresh)
}

// seenSet remembers the last limit envelope IDs.
type seenSet struct {
	ids   map[EnvelopeID]struct{}
	ring  []EnvelopeID
	next  int
	limit int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{ids: make(map[EnvelopeID]struct{}), limit: max(1, min(n, seenLimit))}
}

// add reports whether id is new, and remembers it.
func (s *seenSet) add(id EnvelopeID) bool {
	if _, ok := s.ids[id]; ok {
		return false
	}
	if len(s.ring) < s.limit {
		s.ring = append(s.ring, id)
	} else {
		delete(s.ids, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % s.limit
	}
	s.ids[id] = struct{}{}
	return true
}

// seenLimit bounds the envelope IDs one subscription remembers.
const seenLimit = 1 << 20

// handle serves one relay protocol stream.
func (s *Service) handle(st network.Stream) {
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	defer st.Close()
	// Stop does not wait for slow peers: their streams are reset.
	defer context.AfterFunc(s.ctx, func() { st.Reset() })()
	remote := st.Conn().RemotePeer()
	st.SetReadDeadline(time.Now().Add(RequestTimeout))
	br := bufio.NewReader(st)
	b, err := readFrame(br)
	if err != nil {
		s.refuse(st, codeBadRequest, err)
		return
	}
	req, err := decodeRequest(b)
	if err != nil {
		code := codeBadRequest
		if errors.Is(err, ErrBadAck) {
			code = codeBadAck
		}
		s.log.Debug("refused relay request", "peer", remote.String(), "err", err)
		s.refuse(st, code, err)
		return
	}
	st.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(s.ctx, RequestTimeout)
	defer cancel()
	switch req.Type {
	case msgStore, msgHandover:
		res, err := s.box.Put(ctx, req.Envelopes)
		if err != nil {
			s.log.Warn("store envelopes", "peer", remote.String(), "err", err)
			s.refuse(st, codeInternal, errors.New("store failed"))
			return
		}
		codes := make([]string, len(res))
		stored := 0
		for i, r := range res {
			codes[i] = codeOf(r.Err)
			if r.Err == nil && !r.Duplicate {
				stored++
			}
		}
		s.met.stored.Add(float64(stored))
		if req.Type == msgHandover {
			s.met.handedIn.Add(float64(stored))
			s.log.Debug("received mailbox handover", "peer", remote.String(), "device", req.Device.String(), "envelopes", len(res), "new", stored)
		}
		s.reply(st, frame{Type: msgStoreResult, Results: codes})
	case msgAck:
		n, err := s.box.Ack(req.Device, req.IDs)
		if err != nil {
			s.log.Warn("ack envelopes", "peer", remote.String(), "err", err)
			s.refuse(st, codeInternal, errors.New("ack failed"))
			return
		}
		s.met.acked.Add(float64(n))
		s.reply(st, frame{Type: msgAckResult, Deleted: uint64(n)})
	case msgSubscribe:
		cancel()
		s.serveSubscription(st, br, req.Device)
	}
}

// serveSubscription pushes the device's envelopes until the subscriber
// goes away or the service stops.
func (s *Service) serveSubscription(st network.Stream, br *bufio.Reader, device e2ee.DeviceID) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		// The subscriber writes nothing more: EOF or an error means it left.
		br.ReadByte()
		cancel()
	}()
	err := s.pump(ctx, device, func(envs []Envelope) error {
		f, err := storeFrame(msgPush, device, envs)
		if err != nil {
			return err
		}
		st.SetWriteDeadline(time.Now().Add(PushTimeout))
		return writeFrame(st, f)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Debug("subscription ended", "peer", st.Conn().RemotePeer().String(), "device", device.String(), "err", err)
		st.Reset()
	}
}

func (s *Service) reply(st network.Stream, f frame) {
	st.SetWriteDeadline(time.Now().Add(RequestTimeout))
	if err := writeFrame(st, f); err != nil {
		st.Reset()
	}
}

func (s *Service) refuse(st network.Stream, code string, err error) {
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	s.reply(st, frame{Type: msgError, Code: code, Message: msg})
}

// Rebalance checks, for every mailbox this relay holds, that it is still
// among the Replicas closest relays; a mailbox it no longer should hold is
// stored on the relays that should (a write quorum of them) before it is
// deleted here. Envelopes no relay took stay for the next round.
func (s *Service) Rebalance(ctx context.Context) error {
	var devices []e2ee.DeviceID
	if err := s.box.Devices(func(d e2ee.DeviceID, _ int) bool { devices = append(devices, d); return true }); err != nil {
		return err
	}
	var errs []error
	for _, d := range devices {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		peers, err := s.Relays(ctx, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.Contains(peers, s.host.ID()) {
			continue
		}
		if err := s.handOver(ctx, d, peers); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// handOver moves device's mailbox to peers, batch by batch, deleting here
// what a quorum of them stored.
func (s *Service) handOver(ctx context.Context, device e2ee.DeviceID, peers []peer.ID) error {
	need := s.quorum(len(peers))
	var after uint64
	moved := 0
	for {
		stored, err := s.box.List(device, after, MaxBatch)
		if err != nil || len(stored) == 0 {
			if moved > 0 {
				s.log.Info("handed mailbox over", "device", device.String(), "envelopes", moved, "relays", fmt.Sprint(peers))
			}
			return err
		}
		after = stored[len(stored)-1].Seq
		envs := make([]Envelope, len(stored))
		for i := range stored {
			envs[i] = stored[i].Envelope
		}
		ok := make([]int, len(envs))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Go(func() {
				errs := s.storeRemote(ctx, p, msgHandover, device, envs)
				mu.Lock()
				defer mu.Unlock()
				for i, err := range errs {
					if err == nil {
						ok[i]++
					}
				}
			})
		}
		wg.Wait()
		var done []EnvelopeID
		for i, n := range ok {
			if n >= need {
				done = append(done, envs[i].ID)
			}
		}
		if len(done) == 0 {
			return fmt.Errorf("relay: hand over mailbox of %s: no envelope reached %d relays", device, need)
		}
		n, err := s.box.Ack(device, done)
		if err != nil {
			return fmt.Errorf("relay: delete handed-over envelopes: %w", err)
		}
		moved += n
		s.met.handedOut.Add(float64(n))
	}
}
