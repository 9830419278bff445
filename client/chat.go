package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Chat settings.
const (
	// ChainMaxAge is how long a verified chain is reused before it is
	// fetched again to see device changes (a sender session is renewed
	// when they change).
	ChainMaxAge = 30 * time.Second
	// ReconnectBackoff and MaxReconnectBackoff pace reconnecting.
	ReconnectBackoff    = 200 * time.Millisecond
	MaxReconnectBackoff = 10 * time.Second
	// MaxOrphans bounds the messages held while their key bundle has not
	// arrived yet; they are not acknowledged (so the relays keep them)
	// until QuarantineAfter.
	MaxOrphans = 4096
	// MaxTextSize bounds the text of one message: 261,888 bytes (256 KiB
	// less room for the rest of the payload).
	MaxTextSize = e2ee.MaxMessagePlaintextSize - 256
	// RetryInterval paces sending again what the relays did not take
	// (no quorum) while connected; a reconnect sends it at once.
	RetryInterval = 30 * time.Second
	// MaxReceipts bounds the messages one delivery receipt names.
	MaxReceipts = 1024
	// ReceiptDelay is how long Run waits after receiving messages before
	// it sends their delivery receipts (sooner if it sends anything else),
	// so that a busy conversation costs a receipt per ReceiptDelay, not
	// one per delivery.
	ReceiptDelay = 500 * time.Millisecond
)

// Errors of a chat.
var (
	// ErrTextTooLarge reports a message text over MaxTextSize.
	ErrTextTooLarge = errors.New("client: message text too large")
	// ErrChatRunning reports a Run while another Run of the same chat is
	// still going: one chat keeps one receiving connection.
	ErrChatRunning = errors.New("client: chat is already running")
	// ErrNotUTF8 reports a message text that is not valid UTF-8.
	ErrNotUTF8 = errors.New("client: message text is not UTF-8")
	// ErrEmptyText reports a message with no text but white space.
	ErrEmptyText = errors.New("client: empty message")
	// ErrNotSent reports a message kept in the outbox (StatePending): it
	// is sent when the device is connected again (Run, Fetch, Send).
	ErrNotSent = errors.New("client: not sent yet, kept in the outbox")
	// ErrSuperseded reports that a newer connection of this device (on
	// another machine holding its keys, or another program) took over the
	// node's session; this one stops rather than fight for it.
	ErrSuperseded = errors.New("client: another session of this device took over")
)

// ConnEvent is a change of the live connection (OnConnection).
type ConnEvent struct {
	// Connected is true when a connection is up, false when it dropped.
	Connected bool
	// Node is the node's API URL.
	Node string
	// Err says why it dropped (nil when connected).
	Err error
}

// chatPayload is the plaintext of an e2ee message: deterministic CBOR
// {1: recipient user, 2: sender device's sequence number, 3: sent time
// (ms), 4: text, 5: receipts} (docs/protocol.md, "Chat payload"). A
// payload with receipts is a delivery receipt: its text is empty, and it
// names messages of the recipient's devices that the sender received.
type chatPayload struct {
	To       []byte        `cbor:"1,keyasint"`
	Seq      uint64        `cbor:"2,keyasint"`
	Sent     int64         `cbor:"3,keyasint"`
	Text     string        `cbor:"4,keyasint"`
	Receipts []receiptWire `cbor:"5,keyasint,omitempty"`
	// Delivery is the sending device's delivery key (deliveryKey): the
	// recipients attach it to what they send to that device.
	Delivery []byte `cbor:"6,keyasint,omitempty"`
}

// receiptWire names one received message: its sending device and that
// device's sequence number.
type receiptWire struct {
	Device []byte `cbor:"1,keyasint"`
	Seq    uint64 `cbor:"2,keyasint"`
}

func decodeChatPayload(b []byte) (chatPayload, ident.UserID, error) {
	var p chatPayload
	if err := storeDec.Unmarshal(b, &p); err != nil {
		return chatPayload{}, ident.UserID{}, err
	}
	to, err := ident.UserIDFromBytes(p.To)
	if err != nil {
		return chatPayload{}, ident.UserID{}, err
	}
	if len(p.Text) > MaxTextSize {
		return chatPayload{}, ident.UserID{}, ErrTextTooLarge
	}
	if len(p.Receipts) > MaxReceipts {
		return chatPayload{}, ident.UserID{}, fmt.Errorf("receipt of %d messages, limit %d", len(p.Receipts), MaxReceipts)
	}
	if len(p.Receipts) > 0 && p.Text != "" {
		return chatPayload{}, ident.UserID{}, errors.New("receipt with text")
	}
	if p.Delivery != nil && len(p.Delivery) != wire.DeliveryVerifierSize {
		return chatPayload{}, ident.UserID{}, fmt.Errorf("delivery key of %d bytes", len(p.Delivery))
	}
	for _, r := range p.Receipts {
		if _, err := ident.DeviceIDFromBytes(r.Device); err != nil {
			return chatPayload{}, ident.UserID{}, fmt.Errorf("receipt: %w", err)
		}
	}
	return p, to, nil
}

// Chat is a device's messaging: its conversations (one per peer user),
// their sessions and local history, and the live connection to its node.
// Its methods are safe for concurrent use.
type Chat struct {
	c      *Client
	keys   e2ee.DeviceKeys
	self   Identity
	policy e2ee.RenewalPolicy
	log    *slog.Logger
	// delivery is this device's delivery key (deliveryKey).
	delivery []byte

	mu     sync.Mutex // guards st, store, chains, orphans
	st     *chatState
	store  *chatLog
	chains map[ident.UserID]cachedChain
	// unpinned holds the chains pinned (Chat.pin) and not yet written to
	// the store: the next record carries them.
	unpinned map[ident.UserID]pin
	orphans  []orphan
	// orphanBytes is the size of the orphans' bodies (MaxOrphanBytes).
	orphanBytes int

	// attempts are the outbox entries being sent, by sequence number;
	// receipts are the messages to confirm, by conversation, until a
	// receipt is sealed for them.
	attempts map[uint64]*attempt
	ended    map[uint64]*attempt
	receipts map[ident.UserID][]receiptWire

	sendMu sync.Mutex // one flush at a time: sessions advance in order
	kick   chan struct{}
	// receiptKick tells Run's flush loop that receipts wait.
	receiptKick chan struct{}
	lock        *homeLock

	connMu     sync.Mutex
	conn       *Conn
	connCh     chan struct{} // closed while conn is set, open while it is nil
	running    bool          // a Run is going
	handlers   []func(ChatMessage)
	onStatus   []func(ChatMessage)
	onConnEvts []func(ConnEvent)
}

type orphan struct {
	env    wire.Envelope
	sender ident.UserID
	body   []byte
	// held is when the device first held it; acked, whether it has been
	// acknowledged (quarantined: see QuarantineAfter).
	held  time.Time
	acked bool
}

// OpenChat unlocks the device (one passphrase derivation) and opens the
// chat store of the home.
func (c *Client) OpenChat(passphrase []byte) (*Chat, error) {
	st, err := c.home.State()
	if err != nil {
		return nil, err
	}
	id, err := identityOf(st)
	if err != nil {
		return nil, err
	}
	keys, key, err := c.home.Unlock(passphrase)
	if err != nil {
		return nil, err
	}
	lock, err := lockHome(c.home.Dir())
	if err != nil {
		return nil, err
	}
	store, state, err := openChatLog(c.home.Dir(), key)
	if err != nil {
		lock.release()
		return nil, err
	}
	return &Chat{
		c: c, keys: keys, self: id, policy: e2ee.DefaultRenewalPolicy(), delivery: deliveryKey(keys),
		log:         slog.New(slog.DiscardHandler),
		st:          state,
		store:       store,
		chains:      map[ident.UserID]cachedChain{},
		unpinned:    map[ident.UserID]pin{},
		attempts:    map[uint64]*attempt{},
		ended:       map[uint64]*attempt{},
		receipts:    map[ident.UserID][]receiptWire{},
		kick:        make(chan struct{}, 1),
		receiptKick: make(chan struct{}, 1),
		lock:        lock,
		connCh:      make(chan struct{}),
	}, nil
}

// SetLogger sets where the chat logs what it drops (nothing secret).
func (ch *Chat) SetLogger(l *slog.Logger) { ch.log = l }

// SetRenewalPolicy replaces e2ee.DefaultRenewalPolicy.
func (ch *Chat) SetRenewalPolicy(p e2ee.RenewalPolicy) { ch.policy = p }

// Self returns this device's identity.
func (ch *Chat) Self() Identity { return ch.self }

// OnMessage adds a function called with every new incoming message (and
// every message of this user's other devices), after it is in history.
func (ch *Chat) OnMessage(f func(ChatMessage)) {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	ch.handlers = append(ch.handlers, f)
}

// OnStatus adds a function called when an outgoing message of this device
// changes state (sent, delivered, failed), with the message as it is now.
func (ch *Chat) OnStatus(f func(ChatMessage)) {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	ch.onStatus = append(ch.onStatus, f)
}

// OnConnection adds a function called when Run's connection comes up or
// drops.
func (ch *Chat) OnConnection(f func(ConnEvent)) {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	ch.onConnEvts = append(ch.onConnEvts, f)
}

func (ch *Chat) notifyConn(ev ConnEvent) { callAll(ch, &ch.onConnEvts, ev) }

func (ch *Chat) notifyStatus(m ChatMessage) { callAll(ch, &ch.onStatus, m) }

// callAll calls every function of *list (guarded by ch.connMu) with v.
func callAll[T any](ch *Chat, list *[]func(T), v T) {
	ch.connMu.Lock()
	fs := slices.Clone(*list)
	ch.connMu.Unlock()
	for _, f := range fs {
		f(v)
	}
}

// History returns the conversation with peer, oldest first (each device's
// messages in the order it sent them).
func (ch *Chat) History(peer ident.UserID) []ChatMessage {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return slices.Clone(ch.st.history[peer])
}

// Close ends the connection and closes the store.
func (ch *Chat) Close() error {
	ch.connMu.Lock()
	conn := ch.conn
	ch.connMu.Unlock()
	if conn != nil {
		conn.Close()
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	err := ch.store.close()
	ch.lock.release()
	return err
}

// Conversations lists the peers of every conversation in history.
func (ch *Chat) Conversations() []ident.UserID {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var out []ident.UserID
	for p := range ch.st.history {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ident.UserID) int { return a.Compare(b) })
	return out
}

// Conversation sums up one conversation of the history.
type Conversation struct {
	Peer ident.UserID
	// Last is its newest message (by arrival on this device).
	Last ChatMessage
	// Messages counts its messages, Unseen those from the peer the user
	// has not seen yet, Pending this device's messages not sent yet.
	Messages, Unseen, Pending int
}

// ConversationList returns every conversation of the history, the one
// with the newest message first.
func (ch *Chat) ConversationList() []Conversation {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := make([]Conversation, 0, len(ch.st.history))
	for peer, h := range ch.st.history {
		c := Conversation{Peer: peer, Messages: len(h)}
		seen := ch.st.seen[peer]
		for _, m := range h {
			if newer(m, c.Last) {
				c.Last = m
			}
			if !m.Outgoing && m.Local > seen {
				c.Unseen++
			}
			if m.State == StatePending {
				c.Pending++
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Conversation) int {
		switch {
		case newer(a.Last, b.Last):
			return -1
		case newer(b.Last, a.Last):
			return 1
		}
		return a.Peer.Compare(b.Peer)
	})
	return out
}

// newer reports whether a entered the history after b.
func newer(a, b ChatMessage) bool {
	if a.Local != b.Local {
		return a.Local > b.Local
	}
	return a.Received.After(b.Received)
}

// Unseen returns the messages from others that the user has not seen yet,
// in every conversation, in the order they arrived; MarkSeen marks them.
func (ch *Chat) Unseen() []ChatMessage {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var out []ChatMessage
	for peer, h := range ch.st.history {
		seen := ch.st.seen[peer]
		for _, m := range h {
			if !m.Outgoing && m.Local > seen {
				out = append(out, m)
			}
		}
	}
	slices.SortFunc(out, func(a, b ChatMessage) int { return cmp.Compare(a.Local, b.Local) })
	return out
}

// MarkSeen records that the user has seen msgs: in each of their
// conversations, every message up to the newest of them.
func (ch *Chat) MarkSeen(msgs ...ChatMessage) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	upTo := map[ident.UserID]uint64{}
	for _, m := range msgs {
		if m.Local > ch.st.seen[m.Peer] && m.Local > upTo[m.Peer] {
			upTo[m.Peer] = m.Local
		}
	}
	if len(upTo) == 0 {
		return nil
	}
	var rec chatRecord
	for peer, l := range upTo {
		rec.Seen = append(rec.Seen, seenWire{Peer: peer.Bytes(), Local: l})
	}
	return ch.commitLocked(rec)
}

// Pending returns this device's messages not sent yet, oldest first.
func (ch *Chat) Pending() []ChatMessage {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var out []ChatMessage
	for _, q := range ch.st.queue {
		if q.receipt {
			continue
		}
		if m, ok := ch.st.pendingMessage(q.peer, q.seq); ok {
			out = append(out, m)
		}
	}
	return out
}
