package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Sending goes through the outbox. Queue puts a message in history as
// StatePending (with its sequence number and sent time) before anything
// leaves the device. A flush (under sendMu, whenever a connection is up)
// takes the queue in sequence order: it seals a pending message for its
// recipients, storing the envelopes and the advanced sender session in one
// record, then writes the envelopes to the node; when the node answers,
// the entry ends (StateSent or StateFailed) in another record. An entry
// whose send did not end (connection lost, no quorum, crash) is sent again
// with the same envelopes, so a relay or receiver that has it drops the
// copy and a message key is never used twice.

// SendReport is the fate of one message.
type SendReport struct {
	// Message is the message as it is now: StatePending (not sent yet: the
	// error says why), StateSent, or StateFailed.
	Message ChatMessage
	// Devices is the number of devices the message was stored for.
	Devices int
	// Stored and Relays describe the least replicated of those devices'
	// envelopes: it is on Stored of the Relays relays of its mailbox (the
	// k closest relay nodes, or all there are on a smaller network).
	Stored, Relays int
	// Failed holds, per device, why its envelope was not stored (or its key
	// bundle: the device cannot read the message then).
	Failed map[ident.DeviceID]error
}

// Err joins the failures of a report (nil if none).
func (r SendReport) Err() error {
	var errs []error
	for d, err := range r.Failed {
		errs = append(errs, fmt.Errorf("device %s: %w", d, err))
	}
	return errors.Join(errs...)
}

// maxEnded bounds the ended attempts kept for a SendAsync whose entry
// another flush took.
const maxEnded = 256

// attempt is one send of an outbox entry; done is closed when it ends.
type attempt struct {
	done chan struct{}
	rep  SendReport
	err  error
}

// Send sends text to peer: to every device of peer and every other device
// of this user, renewing the conversation's sender session first when
// e2ee.RenewalPolicy or a change of the devices asks for it. The message is
// in local history (pending) before anything leaves the device; when it
// cannot be sent now the error wraps ErrNotSent and the message stays in
// the outbox.
func (ch *Chat) Send(ctx context.Context, peer ident.UserID, text string) (SendReport, error) {
	wait, rep, err := ch.SendAsync(ctx, peer, text)
	if err != nil {
		return rep, err
	}
	return wait(ctx)
}

// SendAsync is Send that returns once the envelopes are written to the
// node (waiting for a connection while ctx allows); wait collects the
// results. Messages of successive calls reach the relays in call order,
// after anything older in the outbox.
func (ch *Chat) SendAsync(ctx context.Context, peer ident.UserID, text string) (wait func(context.Context) (SendReport, error), rep SendReport, err error) {
	if err := checkText(text); err != nil {
		return nil, rep, err
	}
	if conn := ch.liveConn(); conn != nil {
		att, m, stored, err := ch.sendNow(ctx, conn, peer, text)
		rep.Message = m
		switch {
		case err != nil && (stored || permanent(err)):
			return nil, rep, err
		case err == nil && att == nil:
			return func(context.Context) (SendReport, error) { return rep, nil }, rep, nil // no device to send to
		case err == nil:
			return ch.waitAttempt(att, rep), rep, nil
		}
		// Not sealed (a chain not fetched, the connection gone): queued
		// below, to be sealed and sent later.
	}
	m, err := ch.queue(peer, text)
	if err != nil {
		return nil, rep, err
	}
	rep.Message = m
	// Seal first (that needs only the chains), so that a message to no
	// device ends without a connection; then wait for one if need be.
	att, err := ch.flushFor(ctx, ch.liveConn(), m.Seq)
	if att == nil && errors.Is(err, errNoConn) {
		var conn *Conn
		if conn, err = ch.currentConn(ctx); err == nil {
			att, err = ch.flushFor(ctx, conn, m.Seq)
		}
	}
	if att == nil {
		// Ended already (a device-less conversation, a refusal), or not
		// started: the history says which.
		cur := ch.message(m)
		rep.Message = cur
		if cur.State == StatePending {
			if err == nil {
				err = errors.New("not sent")
			}
			return nil, rep, fmt.Errorf("%w: %w", ErrNotSent, err)
		}
		if cur.State == StateFailed {
			return nil, rep, errors.New(cur.Failure)
		}
		return func(context.Context) (SendReport, error) { return rep, nil }, rep, nil
	}
	return ch.waitAttempt(att, rep), rep, nil
}

// waitAttempt is the wait of SendAsync: the report of att when it ends,
// or, if ctx ends first, the message as it is then (pending).
func (ch *Chat) waitAttempt(att *attempt, rep SendReport) func(context.Context) (SendReport, error) {
	return func(ctx context.Context) (SendReport, error) {
		select {
		case <-att.done:
			return att.rep, att.err
		case <-ctx.Done():
			rep.Message = ch.message(rep.Message)
			return rep, fmt.Errorf("%w: %w", ErrNotSent, ctx.Err())
		}
	}
}

// sendNow seals a new message and writes it to conn at once, after what
// the outbox holds, with one synced record for the message and its
// envelopes. It returns the attempt (nil if no device is to get it), the
// message and whether it is stored; an error with nothing stored (and not
// permanent) leaves the caller to queue the message instead.
func (ch *Chat) sendNow(ctx context.Context, conn *Conn, peer ident.UserID, text string) (att *attempt, m ChatMessage, stored bool, err error) {
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	if err := ch.flushLocked(ctx, conn, nil); err != nil {
		return nil, ChatMessage{}, false, err
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	m = ChatMessage{Peer: peer, From: ch.self.User, Device: ch.self.Device, Sent: now, Received: now, Text: text, Outgoing: true}
	e, seq, err := ch.seal(ctx, sealing{peer: peer, fresh: true, payload: chatPayload{To: peer.Bytes(), Sent: now.UnixMilli(), Text: text}, msg: &m})
	if err != nil {
		return nil, ChatMessage{}, false, err
	}
	m.Seq = seq
	if e == nil {
		return nil, m, true, nil
	}
	if att, err = ch.startLocked(ctx, conn, queued{peer: peer, seq: seq}, e); err != nil {
		// Stored with its envelopes: the next flush sends them.
		return nil, m, true, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	return att, m, true, nil
}

// Queue puts a message to peer in history as pending and returns it; Run
// (or the next Send or Fetch) sends it. Text that is empty (white space
// only) or longer than MaxTextSize is refused.
func (ch *Chat) Queue(peer ident.UserID, text string) (ChatMessage, error) {
	m, err := ch.queue(peer, text)
	if err == nil {
		ch.wake()
	}
	return m, err
}

// checkText refuses what no message may hold.
func checkText(text string) error {
	switch {
	case strings.TrimSpace(text) == "":
		return ErrEmptyText
	case len(text) > MaxTextSize:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTextTooLarge, len(text), MaxTextSize)
	case !utf8.ValidString(text):
		return ErrNotUTF8
	}
	return nil
}

func (ch *Chat) queue(peer ident.UserID, text string) (ChatMessage, error) {
	if err := checkText(text); err != nil {
		return ChatMessage{}, err
	}
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	ch.mu.Lock()
	m := ChatMessage{Peer: peer, From: ch.self.User, Device: ch.self.Device, Seq: ch.st.seq,
		Sent: now, Received: now, Text: text, Outgoing: true, Local: ch.st.local + 1, State: StatePending}
	err := ch.commitLocked(chatRecord{History: []chatMessageWire{encodeChatMessage(m)}, Seq: m.Seq + 1})
	ch.mu.Unlock()
	if err != nil {
		return ChatMessage{}, err
	}
	return m, nil
}

// errNoConn stops a flush without a connection at the first entry to send.
var errNoConn = errors.New("client: no connection to the node")

// flushFor flushes over conn (nil: seal only) and returns the attempt
// sending entry seq, if one is going.
func (ch *Chat) flushFor(ctx context.Context, conn *Conn, seq uint64) (*attempt, error) {
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	var mine *attempt
	err := ch.flushLocked(ctx, conn, func(s uint64, att *attempt) {
		if s == seq {
			mine = att
		}
	})
	if mine == nil {
		// Another flush (Run's) may have taken it.
		ch.mu.Lock()
		if mine = ch.attempts[seq]; mine == nil {
			mine = ch.ended[seq]
		}
		ch.mu.Unlock()
	}
	return mine, err
}

// wake asks Run's flush loop to look at the outbox.
func (ch *Chat) wake() {
	select {
	case ch.kick <- struct{}{}:
	default:
	}
}

// message returns m as the history has it now.
func (ch *Chat) message(m ChatMessage) ChatMessage {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, h := range ch.st.history[m.Peer] {
		if h.Outgoing && h.Device.Equal(m.Device) && h.Seq == m.Seq {
			return h
		}
	}
	return m
}

// pendingMessage finds this device's pending message seq with peer.
func (s *chatState) pendingMessage(peer ident.UserID, seq uint64) (ChatMessage, bool) {
	h := s.history[peer]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].State == StatePending && h[i].Seq == seq {
			return h[i], true
		}
	}
	return ChatMessage{}, false
}

// flushLocked seals what the outbox holds unsealed and writes every entry
// not being sent already to conn, in sequence order; each send ends in
// its own goroutine (settle). It stops at the first error that leaves the
// rest unsendable for now (the connection, a chain it cannot fetch); with
// a nil conn, at the first entry to send (errNoConn). started, if not nil,
// is told of every attempt it starts. ch.sendMu is held.
func (ch *Chat) flushLocked(ctx context.Context, conn *Conn, started func(seq uint64, att *attempt)) error {
	if err := ch.sealReceiptsLocked(ctx); err != nil {
		return err
	}
	ch.mu.Lock()
	queue := append([]queued(nil), ch.st.queue...)
	ch.mu.Unlock()
	for _, q := range queue {
		ch.mu.Lock()
		busy := ch.attempts[q.seq] != nil
		e := ch.st.outbox[q.seq]
		queued := slices.ContainsFunc(ch.st.queue, func(o queued) bool { return o.seq == q.seq })
		ch.mu.Unlock()
		if busy || !queued {
			continue // being sent, or ended since the snapshot
		}
		if e == nil {
			var err error
			if e, err = ch.sealLocked(ctx, q); err != nil {
				if permanent(err) {
					if err := ch.finish(q, StateFailed, err.Error(), nil); err != nil {
						return err
					}
					continue
				}
				return err
			}
			if e == nil {
				continue // ended: no device to send it to
			}
		}
		if conn == nil {
			return errNoConn
		}
		att, err := ch.startLocked(ctx, conn, q, e)
		if err != nil {
			return err
		}
		if started != nil {
			started(q.seq, att)
		}
	}
	return nil
}

// startLocked writes entry e (queued as q) to conn and settles it in the
// background. ch.sendMu is held.
func (ch *Chat) startLocked(ctx context.Context, conn *Conn, q queued, e *outboxEntry) (*attempt, error) {
	att := &attempt{done: make(chan struct{})}
	ch.mu.Lock()
	ch.attempts[q.seq] = att
	ch.mu.Unlock()
	waitRes, err := conn.SendAsync(ctx, e.envs)
	if err != nil {
		ch.endAttempt(q.seq, att, SendReport{}, fmt.Errorf("%w: %w", ErrNotSent, err))
		return nil, err
	}
	go ch.settle(q, e, att, waitRes, conn)
	return att, nil
}

// permanent reports an error that sending again cannot cure.
// A chain conflict is: nothing is sent to the user until it is resolved
// (ChainConflictError).
func permanent(err error) bool {
	var conflict *ChainConflictError
	return IsCode(err, CodeUserNotFound) || errors.Is(err, ErrTextTooLarge) || errors.As(err, &conflict)
}

// sealLocked seals this device's pending message q for every device of its
// peer and this user's other devices, and stores the envelopes and the
// advanced sender session in the outbox with one sync before any of them
// leaves. A conversation with no other device ends at once (nil entry).
// ch.sendMu is held.
func (ch *Chat) sealLocked(ctx context.Context, q queued) (*outboxEntry, error) {
	ch.mu.Lock()
	m, ok := ch.st.pendingMessage(q.peer, q.seq)
	ch.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("client: outbox: message %d to %s is not pending", q.seq, q.peer)
	}
	e, _, err := ch.seal(ctx, sealing{peer: q.peer, seq: q.seq, payload: chatPayload{To: q.peer.Bytes(), Sent: m.Sent.UnixMilli(), Text: m.Text}})
	if err != nil || e != nil {
		return e, err
	}
	return nil, ch.finish(q, StateSent, "", &SendReport{Message: m})
}

// sealReceiptsLocked turns the receipts waiting in memory into sealed
// outbox entries (one per conversation and MaxReceipts messages). What it
// cannot seal now waits for the next flush. ch.sendMu is held.
func (ch *Chat) sealReceiptsLocked(ctx context.Context) error {
	ch.mu.Lock()
	rs := ch.receipts
	ch.receipts = map[ident.UserID][]receiptWire{}
	ch.mu.Unlock()
	var firstErr error
	for peer, refs := range rs {
		for len(refs) > 0 && firstErr == nil {
			n := min(len(refs), MaxReceipts)
			p := chatPayload{To: peer.Bytes(), Sent: time.Now().UnixMilli(), Receipts: refs[:n]}
			if _, _, err := ch.seal(ctx, sealing{peer: peer, fresh: true, payload: p, receipt: true}); err != nil {
				if permanent(err) {
					ch.log.Info("dropped a delivery receipt", "peer", peer.String(), "err", err)
					refs = nil
					break
				}
				firstErr = err
				break
			}
			refs = refs[n:]
		}
		if len(refs) > 0 {
			ch.mu.Lock()
			ch.receipts[peer] = append(refs, ch.receipts[peer]...)
			ch.mu.Unlock()
		}
	}
	return firstErr
}

// sealing is what seal seals: a payload of the conversation with peer.
// A queued message has its seq; with fresh set, seal takes the device's
// next sequence number for it (a receipt, or a new message given as msg,
// which enters history with the envelopes).
type sealing struct {
	peer    ident.UserID
	seq     uint64
	fresh   bool
	payload chatPayload
	msg     *ChatMessage
	receipt bool
}

// seal encrypts a payload for every device of its peer and this user's
// other devices and commits, in one synced record, the envelopes as an
// outbox entry with the sender session they advance (and what fresh
// takes: the sequence number, the new message as pending). The sequence
// number, the session and the record are taken under ch.mu, so nothing
// else numbers or seals in between. With no recipient device it commits
// only a fresh message (as sent) and returns a nil entry. It returns the
// sequence number used.
func (ch *Chat) seal(ctx context.Context, j sealing) (*outboxEntry, uint64, error) {
	own, err := ch.chain(ctx, ch.self.User, ChainMaxAge)
	if err != nil {
		return nil, 0, err
	}
	sets := []ident.DeviceSet{own}
	if !j.peer.Equal(ch.self.User) {
		ps, err := ch.chain(ctx, j.peer, ChainMaxAge)
		if err != nil {
			return nil, 0, err
		}
		sets = append(sets, ps)
	}
	recipients := e2ee.RecipientDevices(ch.self.Device, sets)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	seq := j.seq
	if j.fresh {
		seq = ch.st.seq
	}
	var rec chatRecord
	if j.fresh {
		rec.Seq = seq + 1
	}
	if j.msg != nil {
		j.msg.Seq, j.msg.Local, j.msg.State = seq, ch.st.local+1, StatePending
		if len(recipients) == 0 {
			j.msg.State = StateSent
		}
		rec.History = []chatMessageWire{encodeChatMessage(*j.msg)}
	}
	if len(recipients) == 0 {
		if j.fresh {
			return nil, seq, ch.commitLocked(rec)
		}
		return nil, seq, nil
	}
	j.payload.Seq = seq
	conv := e2ee.DirectConversationID(ch.self.User, j.peer)
	now := time.Now()
	e := &outboxEntry{peer: j.peer, seq: seq, receipt: j.receipt}
	add := func(d ident.DevicePublic, kind e2ee.EnvelopeKind, body []byte) error {
		ct, err := e2ee.SealEnvelope(d, kind, ch.self.User, body)
		if err != nil {
			return err
		}
		// The device's delivery key, once one of its messages gave it:
		// its relays then count the envelope against its mailbox cap, not
		// its quota for message requests.
		e.envs = append(e.envs, wire.Envelope{To: d.ID(), ID: wire.NewEnvelopeID(), Time: now, TTL: wire.DefaultTTL, Ciphertext: ct, Delivery: ch.st.delivery[d.ID()]})
		e.kinds = append(e.kinds, kind)
		return nil
	}
	// The session advances on a copy: ch.st changes only by the commit
	// below (Chat.commitLocked), once the new state is on disk.
	s, err := copySenderSession(ch.st.senders[j.peer])
	if err != nil {
		return nil, 0, fmt.Errorf("client: session state: %w", err)
	}
	if s == nil || ch.policy.NeedsRenewal(s, now, e2ee.FingerprintParticipants(sets)) {
		if s, err = e2ee.NewSenderSession(ch.keys, ch.self.User, conv, sets, now, ch.c.rand); err != nil {
			return nil, 0, fmt.Errorf("client: new session: %w", err)
		}
		b, err := e2ee.NewKeyBundle(s, ch.keys, sets)
		if err != nil {
			return nil, 0, fmt.Errorf("client: key bundle: %w", err)
		}
		enc := b.Encode()
		for _, d := range recipients {
			if err := add(d, e2ee.EnvelopeKeyBundle, enc); err != nil {
				return nil, 0, fmt.Errorf("client: seal key bundle: %w", err)
			}
		}
	}
	j.payload.Delivery = ch.delivery
	pt, err := storeEnc.Marshal(j.payload)
	if err != nil {
		return nil, 0, fmt.Errorf("client: encode message: %w", err)
	}
	msg, err := s.Encrypt(ch.keys.Signing, pt)
	clear(pt)
	if err != nil {
		return nil, 0, fmt.Errorf("client: encrypt: %w", err)
	}
	for _, d := range recipients {
		if err := add(d, e2ee.EnvelopeMessage, msg); err != nil {
			return nil, 0, fmt.Errorf("client: seal message: %w", err)
		}
	}
	state, err := s.MarshalBinary()
	if err != nil {
		return nil, 0, fmt.Errorf("client: session state: %w", err)
	}
	ow, err := encodeOutboxEntry(e)
	if err != nil {
		return nil, 0, fmt.Errorf("client: outbox: %w", err)
	}
	rec.Senders = []senderStateWire{{Peer: j.peer.Bytes(), State: state}}
	rec.Outbox = []outboxWire{ow}
	// The session's new chain key is on disk before any message of it
	// leaves: a crash cannot make the device use a message key twice.
	if err := ch.commitLocked(rec); err != nil {
		return nil, 0, err
	}
	return e, seq, nil
}

// settle waits for the node's answer to an entry's send and ends the entry
// (sent or failed) unless the answer leaves it to be sent again.
func (ch *Chat) settle(q queued, e *outboxEntry, att *attempt, waitRes func(context.Context) ([]wire.SendResult, error), conn *Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), SendTimeout)
	defer cancel()
	res, err := waitRes(ctx)
	if err != nil {
		ch.log.Debug("send not answered", "seq", q.seq, "err", err)
		ch.endAttempt(q.seq, att, SendReport{}, fmt.Errorf("%w: %w", ErrNotSent, err))
		return
	}
	rep, transient := ch.report(e, res, conn)
	ch.log.Debug("send ended", "seq", q.seq, "receipt", q.receipt, "envelopes", len(e.envs), "devices", rep.Devices, "transient", transient, "failed", rep.Err())
	switch {
	case transient != nil:
		ch.endAttempt(q.seq, att, rep, fmt.Errorf("%w: %w", ErrNotSent, transient))
	case rep.Failed != nil:
		if err := ch.finish(q, StateFailed, rep.Err().Error(), &rep); err != nil {
			ch.log.Warn("could not record the end of a send", "err", err)
		}
		ch.endAttempt(q.seq, att, rep, rep.Err())
	default:
		err := ch.finish(q, StateSent, "", &rep)
		if err != nil {
			// The relays have it; the outbox still says pending, so it
			// is sent again (the same envelopes) and ends then.
			ch.log.Warn("could not record the end of a send", "err", err)
			err = fmt.Errorf("%w: %w", ErrNotSent, err)
		}
		ch.endAttempt(q.seq, att, rep, err)
	}
}

// endAttempt records how an attempt ended and lets its waiters go.
func (ch *Chat) endAttempt(seq uint64, att *attempt, rep SendReport, err error) {
	att.rep, att.err = rep, err
	if rep.Message.Seq == seq && rep.Message.Outgoing {
		att.rep.Message = ch.message(rep.Message)
	}
	ch.mu.Lock()
	if ch.attempts[seq] == att {
		delete(ch.attempts, seq)
	}
	if len(ch.ended) >= maxEnded {
		clear(ch.ended)
	}
	ch.ended[seq] = att
	ch.mu.Unlock()
	close(att.done)
}

// finish ends outbox entry q in state (with failure) and tells OnStatus.
// A failed entry ends its conversation's sender session: a device may
// lack the key bundle, so the next message starts a new one.
func (ch *Chat) finish(q queued, state MessageState, failure string, rep *SendReport) error {
	ch.mu.Lock()
	err := ch.commitLocked(chatRecord{Done: []doneWire{{Seq: q.seq, Peer: q.peer.Bytes(), State: uint8(state), Failure: failure}}})
	var m ChatMessage
	found := false
	if !q.receipt {
		for _, h := range ch.st.history[q.peer] {
			if h.Outgoing && h.Device.Equal(ch.self.Device) && h.Seq == q.seq {
				m, found = h, true
			}
		}
	}
	ch.mu.Unlock()
	if err != nil {
		return err
	}
	if state == StateFailed {
		ch.dropSession(q.peer)
	}
	if rep != nil && found {
		rep.Message = m
	}
	if found {
		ch.notifyStatus(m)
	}
	return nil
}

// report fills a report from the send results; envelopes refused for the
// send rate are sent again. transient is a failure that sending the entry
// again may cure (no quorum, connection lost).
func (ch *Chat) report(e *outboxEntry, res []wire.SendResult, conn *Conn) (rep SendReport, transient error) {
	var retry []int
	for i, r := range res {
		if r.Code == wire.ResultRateLimited {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		again := make([]wire.Envelope, len(retry))
		for j, i := range retry {
			again[j] = e.envs[i]
		}
		if err := sleep(context.Background(), RateLimitBackoff); err != nil {
			return rep, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), SendTimeout)
		res2, err := conn.Send(ctx, again)
		cancel()
		if err != nil {
			return rep, err
		}
		for j, i := range retry {
			res[i] = res2[j]
		}
	}
	stored := map[ident.DeviceID]bool{}
	for i, r := range res {
		if r.Code == wire.ResultNoQuorum || r.Code == wire.ResultRateLimited {
			transient = resultError(r)
			continue
		}
		if err := resultError(r); err != nil {
			if rep.Failed == nil {
				rep.Failed = map[ident.DeviceID]error{}
			}
			rep.Failed[e.envs[i].To] = err
			continue
		}
		if e.kinds[i] == e2ee.EnvelopeMessage {
			stored[e.envs[i].To] = true
		}
	}
	for d := range rep.Failed {
		delete(stored, d)
	}
	rep.Devices = len(stored)
	for i, r := range res {
		if e.kinds[i] != e2ee.EnvelopeMessage || !stored[e.envs[i].To] {
			continue
		}
		if rep.Relays == 0 || int(r.Stored)*rep.Relays < rep.Stored*int(r.Relays) {
			rep.Stored, rep.Relays = int(r.Stored), int(r.Relays)
		}
	}
	return rep, transient
}

// dropSession forgets the conversation's sender session so that the next
// message starts (and distributes) a new one.
func (ch *Chat) dropSession(peer ident.UserID) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.st.senders[peer]; !ok {
		return
	}
	if err := ch.commitLocked(chatRecord{Senders: []senderStateWire{{Peer: peer.Bytes()}}}); err != nil {
		ch.log.Warn("could not record the end of a session", "err", err)
	}
}

// copySenderSession is a copy of s (nil if s is nil) that can advance
// without changing s.
func copySenderSession(s *e2ee.SenderSession) (*e2ee.SenderSession, error) {
	if s == nil {
		return nil, nil
	}
	b, err := s.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(b)
	return e2ee.UnmarshalSenderSession(b)
}
