package keyregistry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/volo-chat/volo/ident"
)

// Limits of the device-linking rendezvous mailboxes.
const (
	// MailboxTTL is how long a mailbox lives after its first message.
	MailboxTTL = 10 * time.Minute
	// MaxMailboxMessages bounds the messages of one mailbox.
	MaxMailboxMessages = 16
	// MaxMailboxMessageSize bounds one sealed linking message.
	MaxMailboxMessageSize = 8 << 10
	// MaxMailboxes bounds the mailboxes a node holds at once.
	MaxMailboxes = 4096
	// LongPollTimeout is the longest a long poll (tickets, mailboxes) waits.
	LongPollTimeout = 25 * time.Second
)

var (
	// ErrMailboxFull reports a mailbox holding MaxMailboxMessages.
	ErrMailboxFull = errors.New("keyregistry: rendezvous mailbox full")
	// ErrTooManyMailboxes reports a node holding MaxMailboxes mailboxes.
	ErrTooManyMailboxes = errors.New("keyregistry: too many rendezvous mailboxes")
	// ErrMessageTooLarge reports a linking message over MaxMailboxMessageSize.
	ErrMessageTooLarge = errors.New("keyregistry: linking message too large")
	// ErrEmptyMessage reports an empty linking message.
	ErrEmptyMessage = errors.New("keyregistry: empty linking message")
)

// MailboxMessage is one message of a rendezvous mailbox.
type MailboxMessage struct {
	Seq  uint64
	Data []byte
}

// rendezvous holds the linking mailboxes, in memory only: they are
// short-lived and carry only ciphertext.
type rendezvous struct {
	mu    sync.Mutex
	boxes map[ident.RendezvousID]*mailbox
}

type mailbox struct {
	expires time.Time
	msgs    [][]byte
	// changed is closed and replaced whenever a message arrives.
	changed chan struct{}
}

func newRendezvous() *rendezvous {
	return &rendezvous{boxes: make(map[ident.RendezvousID]*mailbox)}
}

// Post appends data to the mailbox rid, creating it, and returns its seq.
func (r *rendezvous) Post(rid ident.RendezvousID, data []byte) (uint64, error) {
	if len(data) > MaxMailboxMessageSize {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(data), MaxMailboxMessageSize)
	}
	if len(data) == 0 {
		return 0, ErrEmptyMessage
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	b := r.get(rid, now)
	if b == nil {
		r.sweep(now)
		if len(r.boxes) >= MaxMailboxes {
			return 0, fmt.Errorf("%w: %d", ErrTooManyMailboxes, MaxMailboxes)
		}
		b = &mailbox{changed: make(chan struct{})}
		r.boxes[rid] = b
	}
	if len(b.msgs) == 0 {
		// Created now, or held empty by a reader that came first: the
		// mailbox lives MailboxTTL from its first message.
		b.expires = now.Add(MailboxTTL)
	}
	if len(b.msgs) >= MaxMailboxMessages {
		return 0, fmt.Errorf("%w: %d messages", ErrMailboxFull, MaxMailboxMessages)
	}
	b.msgs = append(b.msgs, append([]byte(nil), data...))
	close(b.changed)
	b.changed = make(chan struct{})
	return uint64(len(b.msgs) - 1), nil
}

// Wait returns the messages of rid with seq > after (every message when
// after < 0), waiting until there is one, ctx ends, the mailbox expires or
// LongPollTimeout passes; it may return none.
func (r *rendezvous) Wait(ctx context.Context, rid ident.RendezvousID, after int64) []MailboxMessage {
	timeout := time.NewTimer(LongPollTimeout)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		now := time.Now()
		b := r.get(rid, now)
		var changed chan struct{}
		var expiry <-chan time.Time
		if b != nil {
			if out := b.since(after); len(out) > 0 {
				r.mu.Unlock()
				return out
			}
			changed = b.changed
			t := time.NewTimer(b.expires.Sub(now))
			defer t.Stop()
			expiry = t.C
		}
		r.mu.Unlock()
		if b == nil {
			// Nothing posted yet: the other side may post soon. Poll the
			// map on the next post through a short wait bounded by ctx.
			changed = r.waitCreated(rid)
		}
		select {
		case <-changed:
		case <-expiry:
			return nil
		case <-timeout.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// waitCreated returns a channel closed when rid's mailbox gets its first
// message. It creates an empty placeholder only when there is room; the
// placeholder expires like a mailbox.
func (r *rendezvous) waitCreated(rid ident.RendezvousID) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if b := r.get(rid, now); b != nil {
		return b.changed
	}
	r.sweep(now)
	if len(r.boxes) >= MaxMailboxes {
		return nil // a nil channel: the caller waits for its timeout
	}
	b := &mailbox{expires: now.Add(MailboxTTL), changed: make(chan struct{})}
	r.boxes[rid] = b
	return b.changed
}

func (b *mailbox) since(after int64) []MailboxMessage {
	var out []MailboxMessage
	for i := max(after+1, 0); i < int64(len(b.msgs)); i++ {
		out = append(out, MailboxMessage{Seq: uint64(i), Data: b.msgs[i]})
	}
	return out
}

// get returns rid's mailbox, deleting it if it expired.
func (r *rendezvous) get(rid ident.RendezvousID, now time.Time) *mailbox {
	b, ok := r.boxes[rid]
	if ok && !now.Before(b.expires) {
		delete(r.boxes, rid)
		return nil
	}
	return b
}

func (r *rendezvous) sweep(now time.Time) {
	for id, b := range r.boxes {
		if !now.Before(b.expires) {
			delete(r.boxes, id)
		}
	}
}

// Len is the number of live mailboxes.
func (r *rendezvous) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweep(time.Now())
	return len(r.boxes)
}

// PostMessage appends a sealed linking message to mailbox rid.
func (s *Service) PostMessage(rid ident.RendezvousID, data []byte) (uint64, error) {
	seq, err := s.rendezvous.Post(rid, data)
	if err != nil {
		s.reject(reasonOf(err))
	}
	return seq, err
}

// WaitMessages long-polls mailbox rid for messages after seq after (-1: all).
func (s *Service) WaitMessages(ctx context.Context, rid ident.RendezvousID, after int64) []MailboxMessage {
	return s.rendezvous.Wait(ctx, rid, after)
}
