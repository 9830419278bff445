package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/relay"
	"github.com/volo-chat/volo/wire"
)

// Limits of the WebSocket endpoint /v1/ws.
const (
	// WSAuthTimeout is how long a new socket has to answer the challenge.
	WSAuthTimeout = 10 * time.Second
	// WSWriteTimeout bounds writing one frame to a client.
	WSWriteTimeout = 15 * time.Second
	// MaxWSConnsPerIP bounds the sockets one client address may hold.
	MaxWSConnsPerIP = 32
	// DefaultWSSendRate and DefaultWSSendBurst are the defaults of
	// Config.WSSendRate and WSSendBurst: the envelopes one device may send.
	DefaultWSSendRate  = 500 // envelopes per second
	DefaultWSSendBurst = 2000
	// wsOutQueue is the number of frames waiting for a slow client before
	// the node gives up on it.
	wsOutQueue = 256
	// wsSendTimeout bounds placing one send frame's envelopes on relays.
	wsSendTimeout = 30 * time.Second
)

// WebSocket close codes beyond the standard ones.
const (
	closeUnauthenticated websocket.StatusCode = 4001
	closeSuperseded      websocket.StatusCode = 4002
	closeBadFrame        websocket.StatusCode = 4003
	closeSlowClient      websocket.StatusCode = 4004
)

// Relay is what the WebSocket endpoint needs of the relay service.
type Relay interface {
	Send(ctx context.Context, envs []wire.Envelope) ([]relay.SendResult, error)
	Subscribe(ctx context.Context, token func() wire.SubscribeToken, deliver func([]wire.Envelope)) error
	Ack(ctx context.Context, dev ident.DevicePublic, refs []wire.EnvelopeRef, sig []byte) error
}

// WithRelay mounts GET /v1/ws, the devices' live connection.
func WithRelay(r Relay) Option { return func(s *Server) { s.relay = r } }

// sessions is the connection manager: the live device sessions of this
// node, one per device (a new connection supersedes the old), and the
// number of sockets per client address.
type sessions struct {
	mu      sync.Mutex
	devices map[ident.DeviceID]*wsSession
	perIP   map[string]int

	live   prometheus.Gauge
	frames *prometheus.CounterVec
}

func newSessions(reg prometheus.Registerer) (*sessions, error) {
	s := &sessions{
		devices: make(map[ident.DeviceID]*wsSession),
		perIP:   make(map[string]int),
		live: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "volo_api_ws_sessions",
			Help: "Authenticated device sessions connected to this node.",
		}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_api_ws_frames_total",
			Help: "WebSocket frames, by direction (in, out) and type.",
		}, []string{"dir", "type"}),
	}
	for _, c := range []prometheus.Collector{s.live, s.frames} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return s, nil
}

func (m *sessions) admitIP(ip string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perIP[ip] >= MaxWSConnsPerIP {
		return false
	}
	m.perIP[ip]++
	return true
}

func (m *sessions) releaseIP(ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perIP[ip]--; m.perIP[ip] <= 0 {
		delete(m.perIP, ip)
	}
}

// add registers a session and returns the one it supersedes, if any.
func (m *sessions) add(s *wsSession) *wsSession {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.devices[s.device]
	m.devices[s.device] = s
	if old == nil {
		m.live.Inc()
	}
	return old
}

func (m *sessions) remove(s *wsSession) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.devices[s.device] == s {
		delete(m.devices, s.device)
		m.live.Dec()
	}
}

// Live is the number of device sessions connected to this node.
func (m *sessions) Live() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.devices)
}

// wsSession is one authenticated device connection.
type wsSession struct {
	conn   *websocket.Conn
	device ident.DeviceID
	public ident.DevicePublic
	peerID string // this node's, as the challenge named it
	token  atomic.Pointer[wire.SubscribeToken]
	out    chan wire.Frame
	closed sync.Once
}

// close ends the session with a close frame; the read loop then returns.
// It may be called from any goroutine, more than once.
func (w *wsSession) close(code websocket.StatusCode, reason string) {
	w.closed.Do(func() { go w.conn.Close(code, reason) })
}

func (s *Server) ws(w http.ResponseWriter, r *http.Request) {
	ip := s.clientIP(r)
	if !s.sessions.admitIP(ip) {
		WriteError(w, http.StatusTooManyRequests, wire.CodeTooManyConnections,
			fmt.Sprintf("at most %d WebSocket connections per address", MaxWSConnsPerIP))
		return
	}
	defer s.sessions.releaseIP(ip)
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request
	}
	conn.SetReadLimit(wire.MaxFrameSize)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()

	sess, err := s.wsAuthenticate(ctx, conn)
	if err != nil {
		s.log.Info("websocket authentication failed", "remote", r.RemoteAddr, "err", err)
		s.wsWrite(ctx, conn, wire.Frame{Type: wire.FrameError, Code: "unauthenticated", Message: err.Error()})
		conn.Close(closeUnauthenticated, "unauthenticated")
		return
	}
	// The session is the device's one session before the device hears
	// it is ready: a newer connection always supersedes an older one.
	if old := s.sessions.add(sess); old != nil {
		old.close(closeSuperseded, "superseded by a new connection of this device")
	}
	defer s.sessions.remove(sess)
	if err := s.wsWrite(ctx, conn, wire.Frame{Type: wire.FrameReady}); err != nil {
		sess.close(websocket.StatusInternalError, "write failed")
		return
	}
	s.log.Debug("device connected", "device", sess.device.String(), "remote", r.RemoteAddr)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.wsWriter(ctx, sess) }()
	go func() {
		defer wg.Done()
		err := s.relay.Subscribe(ctx, sess.subscribeToken, func(envs []wire.Envelope) { s.wsDeliver(sess, envs) })
		if err != nil && ctx.Err() == nil {
			s.log.Warn("relay subscription ended", "device", sess.device.String(), "err", err)
			sess.close(websocket.StatusInternalError, "relay subscription failed")
		}
	}()
	if err := s.wsReadLoop(ctx, sess); err != nil {
		// A fatal protocol error: say why, then close.
		s.wsWrite(ctx, conn, wire.Frame{Type: wire.FrameError, Code: "bad_frame", Message: err.Error()})
		sess.close(closeBadFrame, "bad frame")
	}
	sess.close(websocket.StatusNormalClosure, "")
	cancel()
	wg.Wait()
}

// wsAuthenticate sends the challenge and checks the answer: the device
// signed the nonce and this node's peer ID, and it is an active device of
// the user's verified chain.
func (s *Server) wsAuthenticate(ctx context.Context, conn *websocket.Conn) (*wsSession, error) {
	ctx, cancel := context.WithTimeout(ctx, WSAuthTimeout)
	defer cancel()
	nonce := make([]byte, wire.ChallengeNonceSize)
	rand.Read(nonce)
	peerID := s.backend.Info().PeerID
	if err := s.wsWrite(ctx, conn, wire.Frame{Type: wire.FrameChallenge, Nonce: nonce, PeerID: peerID}); err != nil {
		return nil, err
	}
	f, err := s.wsRead(ctx, conn)
	if err != nil {
		return nil, err
	}
	if f.Type != wire.FrameAuth {
		return nil, fmt.Errorf("expected an auth frame, got type %d", f.Type)
	}
	chain, err := s.keys.Lookup(ctx, *f.User)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", f.User, err)
	}
	if chain.Set.Revoked(*f.Device) {
		return nil, fmt.Errorf("device %s is revoked", f.Device)
	}
	pub, ok := chain.Set.Lookup(*f.Device)
	if !ok {
		return nil, fmt.Errorf("device %s is not a device of user %s", f.Device, f.User)
	}
	if err := pub.Signing.Verify(wire.DomainWSAuth, wire.WSAuthMessage(nonce, peerID, *f.User, *f.Device), f.Sig); err != nil {
		return nil, fmt.Errorf("challenge signature: %w", err)
	}
	sess := &wsSession{conn: conn, device: *f.Device, public: pub, peerID: peerID, out: make(chan wire.Frame, wsOutQueue)}
	if err := sess.takeToken(f.Token, time.Now()); err != nil {
		return nil, err
	}
	return sess, nil
}

// subscribeToken is the newest subscribe token of the session's device.
func (w *wsSession) subscribeToken() wire.SubscribeToken { return *w.token.Load() }

// takeToken checks a subscribe token of the session's device for this
// node and keeps it if it is newer than the one kept.
func (w *wsSession) takeToken(raw []byte, now time.Time) error {
	tok, err := wire.DecodeSubscribeToken(raw)
	if err != nil {
		return err
	}
	if !tok.Device.Equal(w.device) {
		return fmt.Errorf("%w: token of device %s on the session of %s", wire.ErrBadToken, tok.Device, w.device)
	}
	if err := tok.CheckFor(w.peerID, now); err != nil {
		return err
	}
	for {
		old := w.token.Load()
		if old != nil && !tok.Time.After(old.Time) {
			return nil
		}
		if w.token.CompareAndSwap(old, &tok) {
			return nil
		}
	}
}

var errBadFrame = errors.New("bad frame")

// wsReadLoop handles the client's frames in order, so that one device's
// envelopes reach the relays in the order it sent them. It returns nil when
// the connection ends and an error for a fatal protocol violation.
func (s *Server) wsReadLoop(ctx context.Context, sess *wsSession) error {
	limiter := rate.NewLimiter(rate.Limit(s.cfg.WSSendRate), s.cfg.WSSendBurst)
	for {
		f, err := s.wsRead(ctx, sess.conn)
		if errors.Is(err, errBadFrame) {
			return err
		}
		if err != nil {
			return nil // closed by either side, or the node is stopping
		}
		switch f.Type {
		case wire.FrameSend:
			s.queue(sess, wire.Frame{Type: wire.FrameSendResult, RequestID: f.RequestID, Results: s.wsSend(ctx, limiter, f.Envelopes)})
		case wire.FrameToken:
			if err := sess.takeToken(f.Token, time.Now()); err != nil {
				s.queue(sess, wire.Frame{Type: wire.FrameError, Code: wire.CodeBadToken, Message: err.Error()})
			}
		case wire.FrameAck:
			refs, err := wire.RefsOf(f.Refs) // DecodeFrame checked their sizes
			if err == nil {
				err = s.relay.Ack(ctx, sess.public, refs, f.Sig)
			}
			if err != nil {
				s.queue(sess, wire.Frame{Type: wire.FrameError, Code: "ack_failed", Message: err.Error()})
			}
		default:
			return fmt.Errorf("%w: a client may not send frame type %d", errBadFrame, f.Type)
		}
	}
}

// wsSend places a send frame's envelopes; each gets a result.
func (s *Server) wsSend(ctx context.Context, limiter *rate.Limiter, raw [][]byte) []wire.SendResult {
	results := make([]wire.SendResult, len(raw))
	if !limiter.AllowN(time.Now(), len(raw)) {
		for i := range results {
			results[i].Code = wire.ResultRateLimited
		}
		return results
	}
	var envs []wire.Envelope
	var at []int
	for i, b := range raw {
		e, err := wire.DecodeEnvelope(b)
		if err != nil {
			results[i].Code = wire.ResultBadEnvelope
			continue
		}
		envs = append(envs, e)
		at = append(at, i)
	}
	if len(envs) == 0 {
		return results
	}
	ctx, cancel := context.WithTimeout(ctx, wsSendTimeout)
	defer cancel()
	res, err := s.relay.Send(ctx, envs)
	for j, i := range at {
		if err == nil {
			results[i].Relays = uint64(res[j].Relays)
		}
		switch {
		case err != nil:
			results[i].Code = wire.ResultNoQuorum
		case res[j].Err == nil:
			results[i].Stored = uint64(res[j].Stored)
		case errors.Is(res[j].Err, wire.ErrMailboxFull):
			results[i].Code, results[i].Stored = wire.ResultMailboxFull, uint64(res[j].Stored)
		case errors.Is(res[j].Err, wire.ErrRequestsFull):
			results[i].Code, results[i].Stored = wire.ResultRequestsFull, uint64(res[j].Stored)
		case errors.Is(res[j].Err, wire.ErrFromFuture):
			results[i].Code = wire.ResultFuture
		case errors.Is(res[j].Err, wire.ErrBadEnvelope), errors.Is(res[j].Err, wire.ErrExpired):
			results[i].Code = wire.ResultBadEnvelope
		default:
			results[i].Code, results[i].Stored = wire.ResultNoQuorum, uint64(res[j].Stored)
		}
	}
	return results
}

// wsDeliver queues envelopes for the device, in deliver frames of as many
// as fit (wire.PackEnvelopes).
func (s *Server) wsDeliver(sess *wsSession, envs []wire.Envelope) {
	raw := make([][]byte, 0, len(envs))
	for _, e := range envs {
		b, err := e.Encode()
		if err != nil {
			continue // relays only hold envelopes that passed Check
		}
		raw = append(raw, b)
	}
	for len(raw) > 0 {
		n := wire.PackEnvelopes(raw)
		s.queue(sess, wire.Frame{Type: wire.FrameDeliver, Envelopes: raw[:n:n]})
		raw = raw[n:]
	}
}

// queue hands a frame to the session's writer; a client that lets
// wsOutQueue frames pile up is disconnected rather than buffered forever.
// Relays keep what it has not acknowledged.
func (s *Server) queue(sess *wsSession, f wire.Frame) {
	select {
	case sess.out <- f:
	default:
		sess.close(closeSlowClient, "client does not read its frames")
	}
}

func (s *Server) wsWriter(ctx context.Context, sess *wsSession) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-sess.out:
			if err := s.wsWrite(ctx, sess.conn, f); err != nil {
				sess.close(websocket.StatusInternalError, "write failed")
				return
			}
		}
	}
}

func (s *Server) wsWrite(ctx context.Context, conn *websocket.Conn, f wire.Frame) error {
	b, err := f.Encode()
	if err != nil {
		return fmt.Errorf("api: encode frame: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, WSWriteTimeout)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
		return err
	}
	s.sessions.frames.WithLabelValues("out", frameName(f.Type)).Inc()
	return nil
}

func (s *Server) wsRead(ctx context.Context, conn *websocket.Conn) (wire.Frame, error) {
	typ, b, err := conn.Read(ctx)
	if err != nil {
		return wire.Frame{}, err
	}
	if typ != websocket.MessageBinary {
		return wire.Frame{}, fmt.Errorf("%w: text message", errBadFrame)
	}
	f, err := wire.DecodeFrame(b)
	if err != nil {
		return wire.Frame{}, fmt.Errorf("%w: %v", errBadFrame, err)
	}
	s.sessions.frames.WithLabelValues("in", frameName(f.Type)).Inc()
	return f, nil
}

func frameName(t wire.FrameType) string {
	switch t {
	case wire.FrameChallenge:
		return "challenge"
	case wire.FrameAuth:
		return "auth"
	case wire.FrameReady:
		return "ready"
	case wire.FrameSend:
		return "send"
	case wire.FrameSendResult:
		return "send_result"
	case wire.FrameDeliver:
		return "deliver"
	case wire.FrameAck:
		return "ack"
	case wire.FrameError:
		return "error"
	case wire.FrameToken:
		return "token"
	}
	return "unknown"
}
