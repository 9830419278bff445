package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// SendReport is the fate of one message.
type SendReport struct {
	Message ChatMessage
	// Devices is the number of devices the message was stored for.
	Devices int
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

// Send sends text to peer: to every device of peer and every other device
// of this user, renewing the conversation's sender session first when
// e2ee.RenewalPolicy or a change of the devices asks for it. The message is
// in local history before anything leaves the device.
func (ch *Chat) Send(ctx context.Context, peer ident.UserID, text string) (SendReport, error) {
	wait, rep, err := ch.SendAsync(ctx, peer, text)
	if err != nil {
		return rep, err
	}
	return wait(ctx)
}

// SendAsync is Send that returns once the envelopes are written to the
// node; wait collects the results. Messages of successive calls reach the
// relays in call order.
func (ch *Chat) SendAsync(ctx context.Context, peer ident.UserID, text string) (wait func(context.Context) (SendReport, error), rep SendReport, err error) {
	if len(text) > MaxTextSize {
		return nil, rep, fmt.Errorf("%w: %d bytes, limit %d", ErrTextTooLarge, len(text), MaxTextSize)
	}
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	own, err := ch.chain(ctx, ch.self.User, ChainMaxAge)
	if err != nil {
		return nil, rep, err
	}
	sets := []ident.DeviceSet{own}
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

	// The session advances on a copy: ch.st changes only by the commit
	// below (Chat.commitLocked), once the new state is on disk.
	ch.mu.Lock()
	s, err := copySenderSession(ch.st.senders[peer])
	ch.mu.Unlock()
	if err != nil {
		return nil, rep, fmt.Errorf("client: session state: %w", err)
	}
	var envs []wire.Envelope
	var kinds []e2ee.EnvelopeKind
	var to []ident.DeviceID
	add := func(d ident.DevicePublic, kind e2ee.EnvelopeKind, body []byte) error {
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
	// The message, its sequence number and the session's new chain key
	// are on disk before any message of it leaves: a crash cannot make
	// the device use a message key or a sequence number twice.
	err = ch.commitLocked(chatRecord{
		History: []chatMessageWire{encodeChatMessage(m)},
		Senders: []senderStateWire{{Peer: peer.Bytes(), State: state}},
		Seq:     seq + 1,
	})
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
func (ch *Chat) report(rep SendReport, peer ident.UserID, res []wire.SendResult, kinds []e2ee.EnvelopeKind, to []ident.DeviceID, envs []wire.Envelope, conn *Conn) (SendReport, error) {
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
	stored := map[ident.DeviceID]bool{}
	for i, r := range res {
		if err := resultError(r); err != nil {
			if rep.Failed == nil {
				rep.Failed = map[ident.DeviceID]error{}
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
