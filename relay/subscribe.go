package relay

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Subscription intervals.
const (
	// resolveInterval is how often a subscription looks the device's
	// relays up again, to follow churn.
	resolveInterval = 30 * time.Second
	// retryMin and retryMax bound the wait before a subscription opens a
	// failed relay stream again.
	retryMin = 250 * time.Millisecond
	retryMax = 15 * time.Second
)

// Subscribe delivers the pending envelopes of the device of token, from
// each of its relays in that relay's order, deduplicated by envelope reference (ID and ciphertext hash: copies
// under one ID with other bytes are all delivered), and then new
// ones as they arrive, by calling deliver (never concurrently) until ctx
// ends; it then returns ctx's error. Relays are looked up again every
// resolveInterval, and a relay whose stream fails is retried with backoff.
//
// token returns the device's newest subscribe token for this node; every
// relay stream opens with the token it returns then. Subscribe fails with
// ErrUnauthorized when the first token is not valid for this node now.
func (s *Service) Subscribe(ctx context.Context, token func() wire.SubscribeToken, deliver func([]Envelope)) error {
	tok := token()
	if err := tok.CheckFor(s.host.ID().String(), s.now()); err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	device := tok.Device
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
			wg.Go(func() { s.follow(fctx, p, token, sub) })
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

// follow delivers what relay p holds for the device of token until ctx
// ends, opening the stream again after failures.
func (s *Service) follow(ctx context.Context, p peer.ID, token func() wire.SubscribeToken, sub *subscription) {
	wait := retryMin
	for ctx.Err() == nil && s.ctx.Err() == nil {
		tok := token()
		device := tok.Device
		var err error
		if p == s.host.ID() {
			if !s.cfg.Enabled {
				return
			}
			if err = tok.CheckFor(p.String(), s.now()); err == nil {
				err = s.box.Register(ctx, tok)
			}
			if err == nil {
				err = s.pump(ctx, device, func(envs []Envelope) error { sub.offer(envs); return nil })
			}
		} else {
			err = s.followRemote(ctx, p, tok, sub, func() { wait = retryMin })
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

func (s *Service) followRemote(ctx context.Context, p peer.ID, tok wire.SubscribeToken, sub *subscription, healthy func()) error {
	device := tok.Device
	raw, err := tok.Encode()
	if err != nil {
		return err
	}
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
	if err := writeFrame(st, frame{Type: msgSubscribe, Token: raw}); err != nil {
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
func (s *Service) pump(ctx context.Context, device ident.DeviceID, emit func([]Envelope) error) error {
	woken, unwatch := s.box.watch(device)
	defer unwatch()
	var after uint64
	for {
		stored, err := s.box.List(device, after, MaxBatch)
		if err != nil {
			return err
		}
		if len(stored) > 0 {
			stored = stored[:frameRun(stored)]
			envs := make([]Envelope, len(stored))
			for i, st := range stored {
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
		if sub.seen.add(e.Ref()) {
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

// seenSet remembers the last limit envelope references.
type seenSet struct {
	ids   map[wire.EnvelopeRef]struct{}
	ring  []wire.EnvelopeRef
	next  int
	limit int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{ids: make(map[wire.EnvelopeRef]struct{}), limit: max(1, min(n, seenLimit))}
}

// add reports whether id is new, and remembers it.
func (s *seenSet) add(id wire.EnvelopeRef) bool {
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

// seenLimit bounds the envelope references one subscription remembers.
const seenLimit = 1 << 20
