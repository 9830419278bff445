package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Timings and limits of the live connection (docs/api.md, "WebSocket").
const (
	// DialTimeout bounds connecting and answering the node's challenge.
	DialTimeout = 20 * time.Second
	// SendTimeout bounds waiting for the result of one send frame (the
	// node answers once a write quorum of relays has the envelopes).
	SendTimeout = 60 * time.Second
	// RateLimitBackoff is the pause before sending again after the node
	// answered rate_limited.
	RateLimitBackoff = 250 * time.Millisecond
	// deliverQueue is the number of deliver frames read ahead of the
	// consumer.
	deliverQueue = 16
	// closeSuperseded is the close code of a session that a newer
	// connection of the same device replaced (docs/api.md).
	closeSuperseded websocket.StatusCode = 4002
)

// Errors of the live connection and of sending.
var (
	// ErrNoQuorum: too few relays stored an envelope; it may not arrive.
	ErrNoQuorum = errors.New("client: too few relays stored the envelope (no quorum)")
	// ErrEnvelopeRefused: the node refused an envelope as malformed or too large.
	ErrEnvelopeRefused = errors.New("client: the node refused the envelope")
	// ErrConnClosed: the connection to the node ended.
	ErrConnClosed = errors.New("client: connection to the node closed")
	// ErrAuthRefused: the node refused this device's answer to its challenge.
	ErrAuthRefused = errors.New("client: the node refused this device's authentication")
)

// resultError turns a send result's code into an error (nil on success).
func resultError(r wire.SendResult) error {
	switch r.Code {
	case "":
		return nil
	case wire.ResultMailboxFull:
		return fmt.Errorf("%w (stored on %d of %d relays)", wire.ErrMailboxFull, r.Stored, r.Relays)
	case wire.ResultNoQuorum:
		return fmt.Errorf("%w: stored on %d of %d relays", ErrNoQuorum, r.Stored, r.Relays)
	case wire.ResultBadEnvelope, wire.ResultTooLarge:
		return fmt.Errorf("%w: %s", ErrEnvelopeRefused, r.Code)
	case wire.ResultRequestsFull:
		return fmt.Errorf("%w (stored on %d relays): the recipient's mailbox takes no more messages from senders it has not written to", wire.ErrRequestsFull, r.Stored)
	case wire.ResultFuture:
		return fmt.Errorf("%w: dated in the future by this device's clock (%s)", ErrEnvelopeRefused, r.Code)
	}
	return fmt.Errorf("client: send refused: %s", r.Code)
}

// Conn is one authenticated WebSocket session of a device with a node.
type Conn struct {
	ws      *websocket.Conn
	device  ident.DeviceID
	keys    e2ee.DeviceKeys
	signing e2ee.SigningKey
	peerID  string
	// verifier is the device's delivery verifier its tokens register.
	verifier []byte

	deliveries  chan []wire.Envelope
	wantDeliver bool

	mu      sync.Mutex
	nextReq uint64
	pending map[uint64]chan []wire.SendResult
	err     error
	done    chan struct{}
}

// wsURL turns the node's API URL into its WebSocket endpoint.
func wsURL(api string) string {
	u := strings.TrimRight(api, "/") + "/v1/ws"
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	if rest, ok := strings.CutPrefix(u, "http://"); ok {
		return "ws://" + rest
	}
	return u
}

// Dial connects to the node at apiURL and authenticates the device keys of
// user. With deliver set, the envelopes the node pushes come out of
// Deliveries (the consumer must read them); without, they are dropped
// unacknowledged (the relays keep them).
func Dial(ctx context.Context, apiURL string, hc *http.Client, user ident.UserID, keys e2ee.DeviceKeys, deliver bool) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, wsURL(apiURL), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		if nu := nodeUnreachable(ctx, apiURL, err); nu != nil {
			err = nu
		}
		return nil, fmt.Errorf("client: connect to %s: %w", apiURL, err)
	}
	ws.SetReadLimit(wire.MaxFrameSize)
	f, err := readFrame(dctx, ws)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: challenge: %w", apiURL, err)
	}
	if f.Type != wire.FrameChallenge {
		ws.CloseNow()
		return nil, fmt.Errorf("%w: %s sent frame type %d before its challenge", ErrNodeMisbehaved, apiURL, f.Type)
	}
	dev := keys.ID()
	sig := keys.Signing.Sign(wire.DomainWSAuth, wire.WSAuthMessage(f.Nonce, f.PeerID, user, dev))
	verifier := wire.DeliveryVerifier(deliveryKey(keys))
	tok, err := subscribeToken(keys, f.PeerID, verifier)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: subscribe token: %w", apiURL, err)
	}
	if err := writeFrame(dctx, ws, wire.Frame{Type: wire.FrameAuth, User: &user, Device: &dev, Sig: sig, Token: tok}); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: authenticate: %w", apiURL, err)
	}
	r, err := readFrame(dctx, ws)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: %s: authenticate: %w", apiURL, err)
	}
	switch r.Type {
	case wire.FrameReady:
	case wire.FrameError:
		ws.CloseNow()
		return nil, fmt.Errorf("%w: %s: %s", ErrAuthRefused, r.Code, r.Message)
	default:
		ws.CloseNow()
		return nil, fmt.Errorf("%w: %s answered the authentication with frame type %d", ErrNodeMisbehaved, apiURL, r.Type)
	}
	c := &Conn{
		ws: ws, device: dev, keys: keys, signing: keys.Signing, peerID: f.PeerID, verifier: verifier,
		deliveries: make(chan []wire.Envelope, deliverQueue), wantDeliver: deliver,
		pending: map[uint64]chan []wire.SendResult{}, done: make(chan struct{}),
	}
	go c.readLoop()
	go c.refreshToken()
	return c, nil
}

// subscribeToken is keys' encoded subscribe token for the node peerID,
// made now, registering the delivery verifier.
func subscribeToken(keys e2ee.DeviceKeys, peerID string, verifier []byte) ([]byte, error) {
	return wire.NewSubscribeToken(keys, peerID, time.Now(), verifier).Encode()
}

// refreshToken sends the node a new subscribe token every
// wire.SubscribeTokenRefresh until the connection ends, so that the node
// can always open the device's relay subscriptions again.
func (c *Conn) refreshToken() {
	t := time.NewTicker(wire.SubscribeTokenRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		tok, err := subscribeToken(c.keys, c.peerID, c.verifier)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
			err = writeFrame(ctx, c.ws, wire.Frame{Type: wire.FrameToken, Token: tok})
			cancel()
		}
		if err != nil {
			c.fail(fmt.Errorf("send subscribe token: %w", err))
			return
		}
	}
}

func readFrame(ctx context.Context, ws *websocket.Conn) (wire.Frame, error) {
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return wire.Frame{}, err
	}
	if typ != websocket.MessageBinary {
		return wire.Frame{}, errors.New("text message from the node")
	}
	return wire.DecodeFrame(b)
}

func writeFrame(ctx context.Context, ws *websocket.Conn, f wire.Frame) error {
	b, err := f.Encode()
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageBinary, b)
}

// PeerID returns the node's libp2p peer ID, as its challenge named it.
func (c *Conn) PeerID() string { return c.peerID }

// Deliveries returns the envelopes the node pushes, one deliver frame at a
// time; it is closed when the connection ends.
func (c *Conn) Deliveries() <-chan []wire.Envelope { return c.deliveries }

// Done is closed when the connection ends; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (nil while it is open).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = fmt.Errorf("%w: %w", ErrConnClosed, err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	close(c.done)
}

func (c *Conn) readLoop() {
	defer close(c.deliveries)
	var nodeErr error
	for {
		f, err := readFrame(context.Background(), c.ws)
		if err != nil {
			if nodeErr != nil {
				err = nodeErr
			}
			if websocket.CloseStatus(err) == closeSuperseded {
				err = fmt.Errorf("%w: %w", ErrSuperseded, err)
			}
			c.fail(err)
			c.ws.CloseNow()
			return
		}
		switch f.Type {
		case wire.FrameSendResult:
			c.mu.Lock()
			ch := c.pending[f.RequestID]
			delete(c.pending, f.RequestID)
			c.mu.Unlock()
			if ch != nil {
				ch <- f.Results
			}
		case wire.FrameDeliver:
			if !c.wantDeliver {
				continue
			}
			envs := make([]wire.Envelope, 0, len(f.Envelopes))
			for _, b := range f.Envelopes {
				e, err := wire.DecodeEnvelope(b)
				if err != nil || !e.To.Equal(c.device) {
					continue // never acknowledged: a correct relay cannot have stored it
				}
				envs = append(envs, e)
			}
			select {
			case c.deliveries <- envs:
			case <-c.done:
				return
			}
		case wire.FrameError:
			nodeErr = fmt.Errorf("node error %s: %s", f.Code, f.Message)
		}
	}
}

// SendAsync writes the envelopes in order, in send frames of as many as
// fit (wire.PackEnvelopes), and returns a function that waits for their
// results. Frames written by successive calls reach the node in call order.
func (c *Conn) SendAsync(ctx context.Context, envs []wire.Envelope) (func(context.Context) ([]wire.SendResult, error), error) {
	type req struct {
		ch chan []wire.SendResult
		n  int
	}
	raw := make([][]byte, len(envs))
	for i, e := range envs {
		b, err := e.Encode()
		if err != nil {
			return nil, err
		}
		raw[i] = b
	}
	var reqs []req
	for len(raw) > 0 {
		n := wire.PackEnvelopes(raw)
		f := wire.Frame{Type: wire.FrameSend, Envelopes: raw[:n:n]}
		ch := make(chan []wire.SendResult, 1)
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		c.nextReq++
		f.RequestID = c.nextReq
		c.pending[f.RequestID] = ch
		c.mu.Unlock()
		if err := writeFrame(ctx, c.ws, f); err != nil {
			c.fail(err)
			return nil, c.Err()
		}
		reqs = append(reqs, req{ch, n})
		raw = raw[n:]
	}
	return func(ctx context.Context) ([]wire.SendResult, error) {
		var out []wire.SendResult
		for _, r := range reqs {
			select {
			case res, ok := <-r.ch:
				if !ok {
					return nil, c.Err()
				}
				if len(res) != r.n {
					return nil, fmt.Errorf("%w: %d results for %d envelopes", ErrNodeMisbehaved, len(res), r.n)
				}
				out = append(out, res...)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return out, nil
	}, nil
}

// Send writes the envelopes and waits for their results, sending again
// those the node refused for the device's send rate.
func (c *Conn) Send(ctx context.Context, envs []wire.Envelope) ([]wire.SendResult, error) {
	out := make([]wire.SendResult, len(envs))
	todo := make([]int, len(envs))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		batch := make([]wire.Envelope, len(todo))
		for j, i := range todo {
			batch[j] = envs[i]
		}
		wait, err := c.SendAsync(ctx, batch)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, SendTimeout)
		res, err := wait(wctx)
		cancel()
		if err != nil {
			return nil, err
		}
		var again []int
		for j, i := range todo {
			if res[j].Code == wire.ResultRateLimited {
				again = append(again, i)
				continue
			}
			out[i] = res[j]
		}
		todo = again
		if len(todo) > 0 {
			if err := sleep(ctx, RateLimitBackoff); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Ack tells the node that the device processed the envelopes refs; the
// device's signature lets the relays delete exactly those (ID and
// ciphertext).
func (c *Conn) Ack(ctx context.Context, refs []wire.EnvelopeRef) error {
	for len(refs) > 0 {
		n := min(len(refs), wire.MaxAckBatch)
		chunk := refs[:n]
		sig := c.signing.Sign(wire.DomainAck, wire.AckMessage(c.device, chunk))
		if err := writeFrame(ctx, c.ws, wire.Frame{Type: wire.FrameAck, Refs: wire.RefBytes(chunk), Sig: sig}); err != nil {
			c.fail(err)
			return c.Err()
		}
		refs = refs[n:]
	}
	return nil
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.fail(errors.New("closed by the client"))
	return c.ws.Close(websocket.StatusNormalClosure, "")
}
