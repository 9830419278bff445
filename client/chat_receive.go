package client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// QuarantineAfter is how long a message whose key bundle has not come is
// left unacknowledged on the relays. Past it, the next delivery
// acknowledges it (the relays delete it) and the device keeps it in memory
// (among its MaxOrphans orphans) in case the bundle comes after all, so
// that what a device cannot use yet does not fill its mailbox forever.
var QuarantineAfter = time.Hour

// opened is one envelope after opening; held and acked are an orphan's.
type opened struct {
	env     wire.Envelope
	content e2ee.SealedContent
	held    time.Time
	acked   bool
}

// receive opens a batch of envelopes: key bundles first, then messages;
// stores the new messages and session states with one sync, then acks,
// then reports the messages, each device's in order, to the OnMessage
// functions and then to sink (if not nil).
//
// The batch works on its own copies of the receiver sessions it opens or
// advances; ch.st changes only by the commit of the batch's record
// (Chat.commitLocked). If that fails, nothing is acked and no session
// moved: the relays deliver the batch again and it opens again.
func (ch *Chat) receive(ctx context.Context, conn *Conn, envs []wire.Envelope, sink func(ChatMessage)) error {
	ch.log.Debug("delivery", "envelopes", len(envs))
	var acks []wire.EnvelopeRef
	var bundles, newMsgs, msgs []opened
	for _, e := range envs {
		c, err := e2ee.OpenEnvelope(ch.keys, e.Ciphertext)
		if err != nil {
			ch.log.Info("dropped an envelope that does not open", "envelope", e.ID.String(), "err", err)
			acks = append(acks, e.Ref())
			continue
		}
		if c.Kind == e2ee.EnvelopeKeyBundle {
			bundles = append(bundles, opened{env: e, content: c})
		} else {
			newMsgs = append(newMsgs, opened{env: e, content: c})
		}
	}
	// Bundles are opened without ch.mu: they may fetch chains.
	opening := map[receiverKey]*e2ee.ReceiverSession{}
	for _, o := range bundles {
		acks = append(acks, o.env.Ref())
		if err := ch.openBundle(ctx, o.content, opening); err != nil {
			ch.log.Info("dropped a key bundle", "envelope", o.env.ID.String(), "err", err)
		}
	}
	ch.mu.Lock()
	batch := batchSessions{st: ch.st, sessions: map[receiverKey]*e2ee.ReceiverSession{}, dirty: map[receiverKey]bool{}, delivery: map[ident.DeviceID][]byte{}}
	for k, rs := range opening {
		if _, ok := ch.st.receivers[k]; ok {
			continue // delivered again: never rewind a session
		}
		batch.sessions[k], batch.dirty[k] = rs, true
	}
	orphans := ch.orphans
	ch.orphans, ch.orphanBytes = nil, 0
	// The orphans first, so that an envelope the relays push again keeps
	// the time it was first held.
	held := make(map[wire.EnvelopeRef]bool, len(orphans))
	msgs = slices.Grow(msgs[:0:0], len(orphans)+len(msgs))
	for _, o := range orphans {
		msgs = append(msgs, opened{o.env, e2ee.SealedContent{Kind: e2ee.EnvelopeMessage, Sender: o.sender, Body: o.body}, o.held, o.acked})
	}
	msgs = append(msgs, newMsgs...)
	var fresh []ChatMessage
	var delivered []msgRefWire
	now := time.Now()
	for _, o := range msgs {
		m, receipts, keep, err := ch.openMessage(o.content, now, &batch)
		switch {
		case keep:
			ref := o.env.Ref()
			if held[ref] {
				continue // pushed again while held
			}
			held[ref] = true
			if o.held.IsZero() {
				o.held = now
			}
			if !o.acked && now.Sub(o.held) >= QuarantineAfter {
				ch.log.Info("quarantined a message whose key bundle has not come", "envelope", o.env.ID.String(), "held_since", o.held)
				acks = append(acks, ref)
				o.acked = true
			}
			ch.log.Debug("message waits for its key bundle", "envelope", o.env.ID.String())
			ch.keepOrphanLocked(orphan{o.env, o.content.Sender, o.content.Body, o.held, o.acked})
			continue
		case err != nil:
			ch.log.Info("dropped a message", "envelope", o.env.ID.String(), "err", err)
		case receipts != nil:
			if !m.Outgoing {
				// The peer's devices confirm our messages; receipts of
				// our other devices (for the peer's messages) say nothing
				// about our own.
				for _, r := range receipts {
					delivered = append(delivered, msgRefWire{Peer: m.Peer.Bytes(), Device: r.Device, Seq: r.Seq})
				}
			}
		default:
			fresh = append(fresh, m)
		}
		acks = append(acks, o.env.Ref())
	}
	slices.SortStableFunc(fresh, func(a, b ChatMessage) int {
		if c := a.Device.Compare(b.Device); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	rec := chatRecord{Delivered: delivered}
	for dev, key := range batch.delivery {
		rec.Delivery = append(rec.Delivery, deliveryWire{Device: dev.Bytes(), Key: key})
	}
	for i := range fresh {
		fresh[i].Local = ch.st.local + uint64(i) + 1
		rec.History = append(rec.History, encodeChatMessage(fresh[i]))
	}
	for k := range batch.dirty {
		state, err := batch.sessions[k].MarshalBinary()
		if err != nil {
			ch.mu.Unlock()
			return fmt.Errorf("client: receiver state: %w", err)
		}
		rec.Receivers = append(rec.Receivers, state)
	}
	if len(rec.History) > 0 || len(rec.Receivers) > 0 || len(rec.Delivered) > 0 || len(rec.Delivery) > 0 {
		if err := ch.commitLocked(rec); err != nil {
			ch.mu.Unlock()
			return err
		}
	}
	// Confirm the peers' messages (not our own devices' and not the
	// conversation with ourselves) with a receipt each, sent by the
	// next flush.
	for _, m := range fresh {
		if !m.Outgoing {
			ch.receipts[m.Peer] = append(ch.receipts[m.Peer], receiptWire{Device: m.Device.Bytes(), Seq: m.Seq})
		}
	}
	var changed []ChatMessage
	for _, d := range delivered {
		peer, _ := ident.UserIDFromBytes(d.Peer)
		for _, h := range ch.st.history[peer] {
			if h.Outgoing && h.Seq == d.Seq && h.State == StateDelivered && slices.Equal(h.Device.Bytes(), d.Device) {
				changed = append(changed, h)
			}
		}
	}
	ch.mu.Unlock()
	if len(fresh) > 0 {
		select {
		case ch.receiptKick <- struct{}{}:
		default:
		}
	}
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
		if sink != nil {
			sink(m)
		}
	}
	for _, m := range changed {
		ch.notifyStatus(m)
	}
	return nil
}

// MaxOrphanBytes bounds the bytes of the messages held as orphans (see
// MaxOrphans), so that a batch that opens them all is one record of the
// chat store (MaxChatRecordSize) and memory stays bounded.
const MaxOrphanBytes = 16 << 20

// keepOrphanLocked holds o until its key bundle comes, if MaxOrphans and
// MaxOrphanBytes allow; else it is dropped unacknowledged, so the relays
// deliver it again. ch.mu is held.
func (ch *Chat) keepOrphanLocked(o orphan) {
	if len(ch.orphans) >= MaxOrphans || ch.orphanBytes+len(o.body) > MaxOrphanBytes {
		return
	}
	ch.orphans = append(ch.orphans, o)
	ch.orphanBytes += len(o.body)
}

// batchSessions is the receiver sessions of one batch: those its bundles
// opened and copies of the ones of st that its messages advance, dirty
// for those to store; and the delivery keys its messages gave that st
// does not hold.
type batchSessions struct {
	st       *chatState
	sessions map[receiverKey]*e2ee.ReceiverSession
	dirty    map[receiverKey]bool
	delivery map[ident.DeviceID][]byte
}

// lookup returns the batch's session k, copying it from st the first
// time; nil if there is none.
func (b *batchSessions) lookup(k receiverKey) (*e2ee.ReceiverSession, error) {
	if rs, ok := b.sessions[k]; ok {
		return rs, nil
	}
	rs, ok := b.st.receivers[k]
	if !ok {
		return nil, nil
	}
	state, err := rs.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(state)
	if rs, err = e2ee.UnmarshalReceiverSession(state); err != nil {
		return nil, err
	}
	b.sessions[k] = rs
	return rs, nil
}

// commitLocked is the one way a change reaches the chat state: it appends
// rec to the log (synced to disk if rec.durable), applies it to ch.st with
// chatState.apply, as replaying the log does, and only then compacts a
// log that has grown enough (chatLog.needsCompaction), so the compacted
// log holds rec too. ch.st is thus always what a replay of the log gives.
// When it returns nil, rec survives the process dying (and, if durable,
// the machine losing power) and ch.st holds it; when it fails, neither
// the log nor ch.st changed. A compaction that fails leaves the log whole
// (rec in it) and is tried again at the next commit. ch.mu is held.
func (ch *Chat) commitLocked(rec chatRecord) error {
	// The chains pinned since the last record go with this one.
	for user, p := range ch.unpinned {
		rec.Pins = append(rec.Pins, pinWire{User: user.Bytes(), Links: p.links})
	}
	// A record that would not replay is never written: the home could
	// not be opened again.
	if err := newChatState().apply(rec); err != nil {
		return fmt.Errorf("client: chat store: record does not apply: %w", err)
	}
	write := ch.store.appendLazy
	if rec.durable() {
		write = ch.store.append
	}
	if err := write(rec); err != nil {
		return err
	}
	if err := ch.st.apply(rec); err != nil {
		return fmt.Errorf("client: chat store: record does not apply: %w", err) // it applied above
	}
	clear(ch.unpinned)
	if ch.store.needsCompaction() {
		if err := ch.store.compact(ch.st); err != nil {
			ch.log.Warn("could not compact the chat store; will try again", "err", err)
		}
	}
	return nil
}

// openBundle verifies a key bundle against its sender's verified chain and
// adds its receiver session to opening (the first one of each session).
func (ch *Chat) openBundle(ctx context.Context, c e2ee.SealedContent, opening map[receiverKey]*e2ee.ReceiverSession) error {
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
	if _, ok := opening[k]; !ok {
		opening[k] = rs
	}
	return nil
}

// openMessage decrypts one message with the batch's sessions. A delivery
// receipt comes back as receipts (not nil), with m naming its conversation
// and sender. keep reports a message whose session is not known yet (its
// bundle may come in a later batch). ch.mu is held.
func (ch *Chat) openMessage(c e2ee.SealedContent, now time.Time, b *batchSessions) (m ChatMessage, receipts []receiptWire, keep bool, err error) {
	msg, err := e2ee.DecodeMessage(c.Body)
	if err != nil {
		return ChatMessage{}, nil, false, err
	}
	h := msg.Header
	if !h.SenderUser.Equal(c.Sender) {
		return ChatMessage{}, nil, false, fmt.Errorf("message of %s sealed as from %s", h.SenderUser, c.Sender)
	}
	k := receiverKey{h.Sender, h.Session}
	rs, err := b.lookup(k)
	if err != nil {
		return ChatMessage{}, nil, false, fmt.Errorf("receiver state: %w", err)
	}
	if rs == nil {
		return ChatMessage{}, nil, true, nil
	}
	pt, err := rs.Decrypt(msg)
	if err != nil {
		return ChatMessage{}, nil, false, err // ErrReplay: a duplicate, already in history
	}
	b.dirty[k] = true
	p, to, err := decodeChatPayload(pt)
	clear(pt)
	if err != nil {
		return ChatMessage{}, nil, false, fmt.Errorf("payload: %w", err)
	}
	if p.Delivery != nil && !bytes.Equal(b.st.delivery[h.Sender], p.Delivery) {
		b.delivery[h.Sender] = p.Delivery
	}
	peer := h.SenderUser
	outgoing := h.SenderUser.Equal(ch.self.User)
	if outgoing {
		peer = to
	} else if !to.Equal(ch.self.User) {
		return ChatMessage{}, nil, false, fmt.Errorf("message of %s addressed to %s", h.SenderUser, to)
	}
	if h.Conversation != e2ee.DirectConversationID(ch.self.User, peer) {
		return ChatMessage{}, nil, false, fmt.Errorf("message of %s in a conversation that is not ours with %s", h.SenderUser, peer)
	}
	m = ChatMessage{
		Peer: peer, From: h.SenderUser, Device: h.Sender, Seq: p.Seq,
		Sent: time.UnixMilli(p.Sent).UTC(), Received: time.UnixMilli(now.UnixMilli()).UTC(), Text: p.Text, Outgoing: outgoing,
	}
	if p.Receipts != nil {
		return m, p.Receipts, false, nil
	}
	if strings.TrimSpace(p.Text) == "" {
		return ChatMessage{}, nil, false, ErrEmptyText
	}
	return m, nil, false, nil
}
