package client

import (
	"errors"
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
	// arrived yet; they are not acknowledged, so the relays keep them.
	MaxOrphans = 4096
	// MaxTextSize bounds the text of one message.
	MaxTextSize = e2ee.MaxMessagePlaintextSize - 256
)

// Errors of a chat.
var (
	// ErrTextTooLarge reports a message text over MaxTextSize.
	ErrTextTooLarge = errors.New("client: message text too large")
	// ErrChatRunning reports a Run while another Run of the same chat is
	// still going: one chat keeps one receiving connection.
	ErrChatRunning = errors.New("client: chat is already running")
)

// chatPayload is the plaintext of an e2ee message: deterministic CBOR
// {1: recipient user, 2: sender device's sequence number, 3: sent time
// (ms), 4: text}.
type chatPayload struct {
	To   []byte `cbor:"1,keyasint"`
	Seq  uint64 `cbor:"2,keyasint"`
	Sent int64  `cbor:"3,keyasint"`
	Text string `cbor:"4,keyasint"`
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

	mu      sync.Mutex // guards st, store, chains, orphans
	st      *chatState
	store   *chatLog
	chains  map[ident.UserID]cachedChain
	orphans []orphan
	// orphanBytes is the size of the orphans' bodies (MaxOrphanBytes).
	orphanBytes int

	sendMu sync.Mutex // one send at a time: sessions advance in order

	connMu   sync.Mutex
	conn     *Conn
	connCh   chan struct{} // closed while conn is set, open while it is nil
	running  bool          // a Run is going
	handlers []func(ChatMessage)
}

type orphan struct {
	env    wire.Envelope
	sender ident.UserID
	body   []byte
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
	store, state, err := openChatLog(c.home.Dir(), key)
	if err != nil {
		return nil, err
	}
	return &Chat{
		c: c, keys: keys, self: id, policy: e2ee.DefaultRenewalPolicy(),
		log:    slog.New(slog.DiscardHandler),
		st:     state,
		store:  store,
		chains: map[ident.UserID]cachedChain{},
		connCh: make(chan struct{}),
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
	return ch.store.close()
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
