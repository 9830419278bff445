package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/volo-chat/volo/e2ee"
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

// ErrTextTooLarge reports a message text over MaxTextSize.
var ErrTextTooLarge = errors.New("client: message text too large")

// chatPayload is the plaintext of an e2ee message: deterministic CBOR
// {1: recipient user, 2: sender device's sequence number, 3: sent time
// (ms), 4: text}.
type chatPayload struct {
	To   []byte `cbor:"1,keyasint"`
	Seq  uint64 `cbor:"2,keyasint"`
	Sent int64  `cbor:"3,keyasint"`
	Text string `cbor:"4,keyasint"`
}

func decodeChatPayload(b []byte) (chatPayload, e2ee.UserID, error) {
	var p chatPayload
	if err := storeDec.Unmarshal(b, &p); err != nil {
		return chatPayload{}, e2ee.UserID{}, err
	}
	to, err := e2ee.UserIDFromBytes(p.To)
	if err != nil {
		return chatPayload{}, e2ee.UserID{}, err
	}
	if len(p.Text) > MaxTextSize {
		return chatPayload{}, e2ee.UserID{}, ErrTextTooLarge
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
	chains  map[e2ee.UserID]cachedChain
	orphans []orphan

	sendMu sync.Mutex // one send at a time: sessions advance in order

	connMu   sync.Mutex
	conn     *Conn
	connCh   chan struct{} // closed when conn is set
	handlers []func(ChatMessage)
}

type cachedChain struct {
	set     e2ee.DeviceSet
	fetched time.Time
}

type orphan struct {
	env    wire.Envelope
	sender e2ee.UserID
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
		chains: map[e2ee.UserID]cachedChain{},
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
func (ch *Chat) History(peer e2ee.UserID) []ChatMessage {
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

// chain returns the verified device set of user, fetched again when older
// than maxAge. This device's own chain must extend the saved one.
func (ch *Chat) chain(ctx context.Context, user e2ee.UserID, maxAge time.Duration) (e2ee.DeviceSet, error) {
	ch.mu.Lock()
	cc, ok := ch.chains[user]
	ch.mu.Unlock()
	now := time.Now()
	if ok && now.Sub(cc.fetched) < maxAge {
		return cc.set, nil
	}
	set, links, err := ch.c.fetchChain(ctx, ch.c.api, user)
	if err != nil {
		return e2ee.DeviceSet{}, err
	}
	if user.Equal(ch.self.User) {
		st, err := ch.c.home.State()
		if err != nil {
			return e2ee.DeviceSet{}, err
		}
		if _, err := ch.c.acceptOwnChain(st, set, links); err != nil {
			return e2ee.DeviceSet{}, err
		}
		if _, ok := set.Lookup(ch.self.Device); !ok {
			return e2ee.DeviceSet{}, fmt.Errorf("%w: %s", ErrDeviceRevoked, ch.self.Device)
		}
	}
	ch.mu.Lock()
	ch.chains[user] = cachedChain{set: set, fetched: now}
	ch.mu.Unlock()
	return set, nil
}

// Connect dials the node once and authenticates; Run keeps a connection
// up by itself, Connect is for a short session (send, then close) that
// does not read deliveries.
func (ch *Chat) Connect(ctx context.Context) error {
	conn, err := Dial(ctx, ch.c.api.URL(), ch.c.hc, ch.self.User, ch.keys, false)
	if err != nil {
		return err
	}
	ch.setConn(conn)
	return nil
}

func (ch *Chat) setConn(conn *Conn) {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	ch.conn = conn
	if conn != nil {
		close(ch.connCh)
	} else {
		ch.connCh = make(chan struct{})
	}
}

// currentConn waits for a live connection.
func (ch *Chat) currentConn(ctx context.Context) (*Conn, error) {
	for {
		ch.connMu.Lock()
		conn, wait := ch.conn, ch.connCh
		ch.connMu.Unlock()
		if conn != nil && conn.Err() == nil {
			return conn, nil
		}
		select {
		case <-wait:
			if conn != nil {
				// the old one died; wait for Run to replace it
				if err := sleep(ctx, ReconnectBackoff); err != nil {
					return nil, fmt.Errorf("client: no connection to the node: %w", err)
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("client: no connection to the node: %w", ctx.Err())
		}
	}
}

// Run keeps a connection to the node until ctx ends: it receives, stores,
// acknowledges and reports incoming messages, and reconnects (with
// backoff) when the connection drops.
func (ch *Chat) Run(ctx context.Context) error {
	backoff := ReconnectBackoff
	for {
		conn, err := Dial(ctx, ch.c.api.URL(), ch.c.hc, ch.self.User, ch.keys, true)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrAuthRefused) {
				return err
			}
			ch.log.Warn("connect failed", "node", ch.c.api.URL(), "err", err)
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(backoff*2, MaxReconnectBackoff)
			continue
		}
		backoff = ReconnectBackoff
		ch.setConn(conn)
		err = ch.serve(ctx, conn, 0)
		ch.setConn(nil)
		conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ch.log.Info("connection ended, reconnecting", "err", err)
	}
}

// Fetch connects, receives what the node delivers until nothing more comes
// for idle, acknowledges it and returns the new messages.
func (ch *Chat) Fetch(ctx context.Context, idle time.Duration) ([]ChatMessage, error) {
	conn, err := Dial(ctx, ch.c.api.URL(), ch.c.hc, ch.self.User, ch.keys, true)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var got []ChatMessage
	ch.OnMessage(func(m ChatMessage) { got = append(got, m) })
	if err := ch.serve(ctx, conn, idle); err != nil && ctx.Err() == nil {
		return got, err
	}
	return got, nil
}

// serve processes deliveries until the connection ends or, with idle > 0,
// until none came for idle.
func (ch *Chat) serve(ctx context.Context, conn *Conn, idle time.Duration) error {
	var timer <-chan time.Time
	for {
		if idle > 0 {
			timer = time.After(idle)
		}
		select {
		case envs, ok := <-conn.Deliveries():
			if !ok {
				return conn.Err()
			}
			if err := ch.receive(ctx, conn, envs); err != nil {
				return err
			}
		case <-timer:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// opened is one envelope after opening.
type opened struct {
	env     wire.Envelope
	content e2ee.SealedContent
}

// receive opens a batch of envelopes: key bundles first, then messages;
// stores the new messages and session states with one sync, then acks,
// then reports the messages, each device's in order.
func (ch *Chat) receive(ctx context.Context, conn *Conn, envs []wire.Envelope) error {
	var acks []wire.EnvelopeID
	var bundles, msgs []opened
	for _, e := range envs {
		c, err := e2ee.OpenEnvelope(ch.keys, e.Ciphertext)
		if err != nil {
			ch.log.Info("dropped an envelope that does not open", "envelope", e.ID.String(), "err", err)
			acks = append(acks, e.ID)
			continue
		}
		if c.Kind == e2ee.EnvelopeKeyBundle {
			bundles = append(bundles, opened{e, c})
		} else {
			msgs = append(msgs, opened{e, c})
		}
	}
	rec := chatRecord{}
	dirty := map[receiverKey]bool{}
	for _, o := range bundles {
		acks = append(acks, o.env.ID)
		if err := ch.openBundle(ctx, o.content, dirty); err != nil {
			ch.log.Info("dropped a key bundle", "envelope", o.env.ID.String(), "err", err)
		}
	}
	ch.mu.Lock()
	for _, o := range ch.orphans {
		msgs = append(msgs, opened{o.env, e2ee.SealedContent{Kind: e2ee.EnvelopeMessage, Sender: o.sender, Body: o.body}})
	}
	ch.orphans = nil
	var fresh []ChatMessage
	now := time.Now()
	for _, o := range msgs {
		m, keep, err := ch.openMessage(o.content, now, dirty)
		switch {
		case keep:
			if len(ch.orphans) < MaxOrphans {
				ch.orphans = append(ch.orphans, orphan{o.env, o.content.Sender, o.content.Body})
			}
			continue
		case err != nil:
			ch.log.Info("dropped a message", "envelope", o.env.ID.String(), "err", err)
		default:
			fresh = append(fresh, m)
		}
		acks = append(acks, o.env.ID)
	}
	slices.SortStableFunc(fresh, func(a, b ChatMessage) int {
		if c := a.Device.Compare(b.Device); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	for _, m := range fresh {
		ch.st.insert(m)
		rec.History = append(rec.History, encodeChatMessage(m))
	}
	for k := range dirty {
		if rs, ok := ch.st.receivers[k]; ok {
			b, err := rs.MarshalBinary()
			if err != nil {
				ch.mu.Unlock()
				return fmt.Errorf("client: receiver state: %w", err)
			}
			rec.Receivers = append(rec.Receivers, b)
		}
	}
	if len(rec.History) > 0 || len(rec.Receivers) > 0 {
		if err := ch.persistLocked(rec); err != nil {
			ch.mu.Unlock()
			return err
		}
	}
	ch.mu.Unlock()
	if len(acks) > 0 {
		if err := conn.Ack(ctx, acks); err != nil {
			return err
		}
	}
	ch.connMu.Lock()
	hs := slices.Clone(ch.handlers)
	ch.connMu.Unlock()
	for _, m := range fresh {
		for _, h := range hs {
			h(m)
		}
	}
	return nil
}

// persistLocked appends a record and compacts a log that has grown
// enough (chatLog.needsCompaction). ch.mu is held.
func (ch *Chat) persistLocked(rec chatRecord) error {
	if err := ch.store.append(rec); err != nil {
		return err
	}
	if ch.store.needsCompaction() {
		return ch.store.compact(ch.st)
	}
	return nil
}

// openBundle verifies a key bundle against its sender's verified chain and
// keeps its receiver session.
func (ch *Chat) openBundle(ctx context.Context, c e2ee.SealedContent, dirty map[receiverKey]bool) error {
	b, err := e2ee.DecodeKeyBundle(c.Body)
	if err != nil {
		return err
	}
	if !b.SenderUser.Equal(c.Sender) {
		return fmt.Errorf("bundle of %s sealed as from %s", b.SenderUser, c.Sender)
	}
	if !c.Sender.Equal(ch.self.User) && b.Conversation != e2ee.DirectConversationID(ch.self.User, c.Sender) {
		return fmt.Errorf("bundle for a conversation that is not ours with %s", c.Sender)
	}
	set, err := ch.chain(ctx, b.SenderUser, ChainMaxAge)
	if err != nil {
		return err
	}
	rs, err := e2ee.OpenKeyBundle(b, set, ch.keys)
	if errors.Is(err, e2ee.ErrUnknownSender) {
		// A device added since the chain was fetched: fetch it again.
		if set, err = ch.chain(ctx, b.SenderUser, 0); err == nil {
			rs, err = e2ee.OpenKeyBundle(b, set, ch.keys)
		}
	}
	if err != nil {
		return err
	}
	k := receiverKey{rs.Sender(), rs.ID()}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.st.receivers[k]; ok {
		return nil // delivered again: never rewind a session
	}
	ch.st.receivers[k] = rs
	dirty[k] = true
	return nil
}

// openMessage decrypts one message. keep reports a message whose session
// is not known yet (its bundle may come in a later batch). ch.mu is held.
func (ch *Chat) openMessage(c e2ee.SealedContent, now time.Time, dirty map[receiverKey]bool) (ChatMessage, bool, error) {
	m, err := e2ee.DecodeMessage(c.Body)
	if err != nil {
		return ChatMessage{}, false, err
	}
	h := m.Header
	if !h.SenderUser.Equal(c.Sender) {
		return ChatMessage{}, false, fmt.Errorf("message of %s sealed as from %s", h.SenderUser, c.Sender)
	}
	k := receiverKey{h.Sender, h.Session}
	rs, ok := ch.st.receivers[k]
	if !ok {
		return ChatMessage{}, true, nil
	}
	pt, err := rs.Decrypt(m)
	if err != nil {
		return ChatMessage{}, false, err // ErrReplay: a duplicate, already in history
	}
	dirty[k] = true
	p, to, err := decodeChatPayload(pt)
	clear(pt)
	if err != nil {
		return ChatMessage{}, false, fmt.Errorf("payload: %w", err)
	}
	peer := h.SenderUser
	outgoing := h.SenderUser.Equal(ch.self.User)
	if outgoing {
		peer = to
	} else if !to.Equal(ch.self.User) {
		return ChatMessage{}, false, fmt.Errorf("message of %s addressed to %s", h.SenderUser, to)
	}
	if h.Conversation != e2ee.DirectConversationID(ch.self.User, peer) {
		return ChatMessage{}, false, fmt.Errorf("message of %s in a conversation that is not ours with %s", h.SenderUser, peer)
	}
	return ChatMessage{
		Peer: peer, From: h.SenderUser, Device: h.Sender, Seq: p.Seq,
		Sent: time.UnixMilli(p.Sent).UTC(), Received: now.UTC(), Text: p.Text, Outgoing: outgoing,
	}, false, nil
}

// SendReport is the fate of one message.
type SendReport struct {
	Message ChatMessage
	// Devices is the number of devices the message was stored for.
	Devices int
	// Failed holds, per device, why its envelope was not stored (or its key
	// bundle: the device cannot read the message then).
	Failed map[e2ee.DeviceID]error
}

// Err joins the failures of a report (nil if none).
func (r SendReport) Err() error {
	var errs []error
	for d, err := range r.Failed {
		errs = append(errs, fmt.Errorf("device %s: %w", d, err))
	}
	return errors.Join(errs...)
}

// Send sends text to peer: to every device of peer and every other device
// of this user, renewing the conversation's sender session first when
// e2ee.RenewalPolicy or a change of the devices asks for it. The message is
// in local history before anything leaves the device.
func (ch *Chat) Send(ctx context.Context, peer e2ee.UserID, text string) (SendReport, error) {
	wait, rep, err := ch.SendAsync(ctx, peer, text)
	if err != nil {
		return rep, err
	}
	return wait(ctx)
}

// SendAsync is Send that returns once the envelopes are written to the
// node; wait collects the results. Messages of successive calls reach the
// relays in call order.
func (ch *Chat) SendAsync(ctx context.Context, peer e2ee.UserID, text string) (wait func(context.Context) (SendReport, error), rep SendReport, err error) {
	if len(text) > MaxTextSize {
		return nil, rep, fmt.Errorf("%w: %d bytes, limit %d", ErrTextTooLarge, len(text), MaxTextSize)
	}
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	own, err := ch.chain(ctx, ch.self.User, ChainMaxAge)
	if err != nil {
		return nil, rep, err
	}
	sets := []e2ee.DeviceSet{own}
	if !peer.Equal(ch.self.User) {
		ps, err := ch.chain(ctx, peer, ChainMaxAge)
		if err != nil {
			return nil, rep, err
		}
		sets = append(sets, ps)
	}
	recipients := e2ee.RecipientDevices(ch.self.Device, sets)
	conv := e2ee.DirectConversationID(ch.self.User, peer)
	now := time.Now()

	ch.mu.Lock()
	s := ch.st.senders[peer]
	ch.mu.Unlock()
	var envs []wire.Envelope
	var kinds []e2ee.EnvelopeKind
	var to []e2ee.DeviceID
	add := func(d e2ee.DevicePublic, kind e2ee.EnvelopeKind, body []byte) error {
		ct, err := e2ee.SealEnvelope(d, kind, ch.self.User, body)
		if err != nil {
			return err
		}
		envs = append(envs, wire.Envelope{To: d.ID(), ID: wire.NewEnvelopeID(), Time: now, TTL: wire.DefaultTTL, Ciphertext: ct})
		kinds, to = append(kinds, kind), append(to, d.ID())
		return nil
	}
	if s == nil || ch.policy.NeedsRenewal(s, now, e2ee.FingerprintParticipants(sets)) {
		if s, err = e2ee.NewSenderSession(ch.keys, ch.self.User, conv, sets, now, ch.c.rand); err != nil {
			return nil, rep, fmt.Errorf("client: new session: %w", err)
		}
		b, err := e2ee.NewKeyBundle(s, ch.keys, sets)
		if err != nil {
			return nil, rep, fmt.Errorf("client: key bundle: %w", err)
		}
		enc := b.Encode()
		for _, d := range recipients {
			if err := add(d, e2ee.EnvelopeKeyBundle, enc); err != nil {
				return nil, rep, fmt.Errorf("client: seal key bundle: %w", err)
			}
		}
	}
	ch.mu.Lock()
	seq := ch.st.seq
	ch.mu.Unlock()
	pt, err := storeEnc.Marshal(chatPayload{To: peer.Bytes(), Seq: seq, Sent: now.UnixMilli(), Text: text})
	if err != nil {
		return nil, rep, fmt.Errorf("client: encode message: %w", err)
	}
	msg, err := s.Encrypt(ch.keys.Signing, pt)
	clear(pt)
	if err != nil {
		return nil, rep, fmt.Errorf("client: encrypt: %w", err)
	}
	for _, d := range recipients {
		if err := add(d, e2ee.EnvelopeMessage, msg); err != nil {
			return nil, rep, fmt.Errorf("client: seal message: %w", err)
		}
	}
	state, err := s.MarshalBinary()
	if err != nil {
		return nil, rep, fmt.Errorf("client: session state: %w", err)
	}
	m := ChatMessage{Peer: peer, From: ch.self.User, Device: ch.self.Device, Seq: seq,
		Sent: time.UnixMilli(now.UnixMilli()).UTC(), Received: time.UnixMilli(now.UnixMilli()).UTC(), Text: text, Outgoing: true}
	rep.Message = m

	ch.mu.Lock()
	// The session's new chain key is on disk before any message of it
	// leaves: a crash cannot make the device use a message key twice.
	err = ch.persistLocked(chatRecord{
		History: []chatMessageWire{encodeChatMessage(m)},
		Senders: []senderStateWire{{Peer: peer.Bytes(), State: state}},
		Seq:     seq + 1,
	})
	if err == nil {
		ch.st.senders[peer] = s
		ch.st.seq = seq + 1
		ch.st.insert(m)
	}
	ch.mu.Unlock()
	if err != nil {
		return nil, rep, err
	}
	if len(envs) == 0 {
		return func(context.Context) (SendReport, error) { return rep, nil }, rep, nil
	}
	conn, err := ch.currentConn(ctx)
	if err != nil {
		return nil, rep, err
	}
	waitRes, err := conn.SendAsync(ctx, envs)
	if err != nil {
		ch.dropSession(peer)
		return nil, rep, err
	}
	return func(ctx context.Context) (SendReport, error) {
		wctx, cancel := context.WithTimeout(ctx, SendTimeout)
		defer cancel()
		res, err := waitRes(wctx)
		if err != nil {
			ch.dropSession(peer)
			return rep, err
		}
		return ch.report(rep, peer, res, kinds, to, envs, conn)
	}, rep, nil
}

// report fills rep from the send results; envelopes refused for the send
// rate are sent again. A key bundle that was not stored makes the
// session unusable for its device: the next message renews it.
func (ch *Chat) report(rep SendReport, peer e2ee.UserID, res []wire.SendResult, kinds []e2ee.EnvelopeKind, to []e2ee.DeviceID, envs []wire.Envelope, conn *Conn) (SendReport, error) {
	var retry []int
	for i, r := range res {
		if r.Code == wire.ResultRateLimited {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		again := make([]wire.Envelope, len(retry))
		for j, i := range retry {
			again[j] = envs[i]
		}
		ctx, cancel := context.WithTimeout(context.Background(), SendTimeout)
		res2, err := conn.Send(ctx, again)
		cancel()
		if err != nil {
			ch.dropSession(peer)
			return rep, err
		}
		for j, i := range retry {
			res[i] = res2[j]
		}
	}
	stored := map[e2ee.DeviceID]bool{}
	for i, r := range res {
		if err := resultError(r); err != nil {
			if rep.Failed == nil {
				rep.Failed = map[e2ee.DeviceID]error{}
			}
			rep.Failed[to[i]] = err
			if kinds[i] == e2ee.EnvelopeKeyBundle {
				ch.dropSession(peer)
			}
			continue
		}
		if kinds[i] == e2ee.EnvelopeMessage {
			stored[to[i]] = true
		}
	}
	for d := range rep.Failed {
		delete(stored, d)
	}
	rep.Devices = len(stored)
	return rep, rep.Err()
}

// dropSession forgets the conversation's sender session so that the next
// message starts (and distributes) a new one.
func (ch *Chat) dropSession(peer e2ee.UserID) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.st.senders[peer]; !ok {
		return
	}
	delete(ch.st.senders, peer)
	if err := ch.persistLocked(chatRecord{Senders: []senderStateWire{{Peer: peer.Bytes()}}}); err != nil {
		ch.log.Warn("could not record the end of a session", "err", err)
	}
}

// Conversations lists the peers of every conversation in history.
func (ch *Chat) Conversations() []e2ee.UserID {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var out []e2ee.UserID
	for p := range ch.st.history {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b e2ee.UserID) int { return a.Compare(b) })
	return out
}
