package backupstore

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/volo-chat/volo/wire"
)

// handle serves one backup protocol stream, wrapped by the lifecycle's
// Handler: Stop resets it and waits for it.
func (s *Service) handle(st network.Stream) {
	remote := st.Conn().RemotePeer()
	st.SetDeadline(time.Now().Add(RequestTimeout))
	br := bufio.NewReader(st)
	b, err := readPart(br, MaxHeaderSize)
	if err != nil {
		s.refuse(st, err)
		return
	}
	req, err := decodeRequest(b)
	if err != nil {
		s.met.refusals.WithLabelValues("bad_request").Inc()
		s.log.Debug("refused backup request", "peer", remote.String(), "err", err)
		s.refuse(st, err)
		return
	}
	var body []byte
	if hasBody(req.Type) {
		// The chunk is committed (or refused) before the handler returns:
		// its buffer goes back to the pool then.
		if body, err = readPartInto(br, wire.MaxChunkSize, getBuffer); err != nil {
			s.refuse(st, err)
			return
		}
		defer putBuffer(body)
	}
	ctx, cancel := context.WithTimeout(s.ctx, RequestTimeout)
	defer cancel()
	switch req.Type {
	case msgStore, msgRelease:
		// The device signed for the node that forwards: no node can pass
		// on an authorization it was not given.
		if req.Auth.Entry != remote.String() {
			s.met.refusals.WithLabelValues("auth").Inc()
			s.refuse(st, fmt.Errorf("%w: authorization for node %s forwarded by %s", ErrUnauthenticated, req.Auth.Entry, remote))
			return
		}
		if req.Type == msgRelease {
			if err := s.verifyAuth(ctx, req.Auth, req.CID.String(), true); err != nil {
				s.refuse(st, err)
				return
			}
			if _, err := s.cs.remove(ctx, req.CID, req.Auth.User); err != nil {
				s.refuse(st, err)
				return
			}
			s.reply(st, header{Type: msgOK}, nil)
			return
		}
		fallthrough
	case msgReplicate:
		isNew, err := s.storeLocal(ctx, req.CID, body, req.Kind, req.Auth, req.Type == msgStore)
		if err != nil {
			s.log.Debug("refused chunk", "peer", remote.String(), "cid", req.CID.String(), "err", err)
			s.refuse(st, err)
			return
		}
		s.reply(st, header{Type: msgOK, New: isNew}, nil)
	case msgGet:
		if !s.cfg.Enabled {
			s.refuse(st, ErrNotStorage)
			return
		}
		data, err := s.getLocalInto(req.CID, getBuffer)
		if err != nil {
			s.refuse(st, err)
			return
		}
		s.reply(st, header{Type: msgChunk}, data) // the stream copies what it sends
		putBuffer(data)
	case msgHas:
		held, err := s.hasOn(ctx, s.host.ID(), req.CIDs)
		if err != nil {
			s.refuse(st, err)
			return
		}
		out := make([]byte, len(held))
		for i, h := range held {
			if h {
				out[i] = 1
			}
		}
		s.reply(st, header{Type: msgHasResult, Held: out}, nil)
	}
}

func (s *Service) reply(st network.Stream, h header, body []byte) {
	if err := writeMessage(st, h, body); err != nil {
		st.Reset()
	}
}

func (s *Service) refuse(st network.Stream, err error) {
	code := codeOf(err)
	msg := err.Error()
	if code == codeInternal {
		s.log.Warn("backup request failed", "peer", st.Conn().RemotePeer().String(), "err", err)
		msg = "internal error"
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	s.reply(st, header{Type: msgError, Code: code, Message: msg}, nil)
}
