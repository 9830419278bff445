package relay

import (
	"bufio"
	"context"
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/volo-chat/volo/ident"
)

// handle serves one relay protocol stream, wrapped by the lifecycle's
// Handler: Stop resets it and waits for it.
func (s *Service) handle(st network.Stream) {
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
		switch {
		case errors.Is(err, ErrBadAck):
			code = codeBadAck
		case errors.Is(err, ErrUnauthorized):
			code = codeUnauthorized
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
		if !s.allowStore(remote, len(req.Envelopes)) {
			codes := make([]string, len(req.Envelopes))
			for i := range codes {
				codes[i] = codeRateLimited
			}
			s.met.rateLimited.Add(float64(len(codes)))
			s.reply(st, frame{Type: msgStoreResult, Results: codes})
			return
		}
		if req.Type == msgHandover && !req.Token.Device.IsZero() && s.responsible(ctx, req.Device) {
			if err := s.box.Register(ctx, req.Token); err != nil {
				s.log.Warn("register handed-over token", "peer", remote.String(), "err", err)
			}
		}
		res, err := s.putResponsible(ctx, req.Envelopes)
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
		n, err := s.box.Ack(req.Device, req.Refs)
		if err != nil {
			s.log.Warn("ack envelopes", "peer", remote.String(), "err", err)
			s.refuse(st, codeInternal, errors.New("ack failed"))
			return
		}
		s.met.acked.Add(float64(n))
		s.reply(st, frame{Type: msgAckResult, Deleted: uint64(n)})
	case msgSubscribe:
		if err := req.Token.CheckFor(remote.String(), s.now()); err != nil {
			s.log.Debug("refused subscription", "peer", remote.String(), "device", req.Device.String(), "err", err)
			s.refuse(st, codeUnauthorized, err)
			return
		}
		if err := s.box.Register(ctx, req.Token); err != nil {
			s.log.Warn("register subscribe token", "peer", remote.String(), "err", err)
		}
		cancel()
		s.serveSubscription(st, br, req.Device)
	}
}

// putResponsible stores the envelopes whose mailboxes this relay is among
// the closest relays of; the others get ErrNotResponsible.
func (s *Service) putResponsible(ctx context.Context, envs []Envelope) ([]PutResult, error) {
	res := make([]PutResult, len(envs))
	mine := make([]Envelope, 0, len(envs))
	at := make([]int, 0, len(envs))
	verdict := make(map[string]bool, 1)
	for i, e := range envs {
		k := string(e.To.Bytes())
		ok, seen := verdict[k]
		if !seen {
			ok = s.responsible(ctx, e.To)
			verdict[k] = ok
		}
		if !ok {
			res[i].Err = ErrNotResponsible
			continue
		}
		mine, at = append(mine, e), append(at, i)
	}
	if len(mine) == 0 {
		return res, nil
	}
	put, err := s.box.Put(ctx, mine)
	if err != nil {
		return nil, err
	}
	for j, i := range at {
		res[i] = put[j]
	}
	return res, nil
}

// serveSubscription pushes the device's envelopes until the subscriber
// goes away or the service stops.
func (s *Service) serveSubscription(st network.Stream, br *bufio.Reader, device ident.DeviceID) {
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
