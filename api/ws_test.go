package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

type wsDevice struct {
	keys e2ee.DeviceKeys
	user ident.UserID
}

// registerOpen registers a new user on node url (open registration).
func registerOpen(t *testing.T, url string) wsDevice {
	t.Helper()
	keys := newKeys(t)
	req, g := registration(t, url, keys, "")
	if st, code := call(t, "POST", url+"/v1/users", req, nil); st != 201 {
		t.Fatalf("register: %d %s", st, code)
	}
	return wsDevice{keys: keys, user: g.UserID()}
}

func wsURL(apiURL string) string { return "ws" + strings.TrimPrefix(apiURL, "http") + "/v1/ws" }

func readFrame(t *testing.T, ctx context.Context, c *websocket.Conn) wire.Frame {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("text message from the node")
	}
	f, err := wire.DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFrame(t *testing.T, ctx context.Context, c *websocket.Conn, f wire.Frame) {
	t.Helper()
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
}

// connect opens /v1/ws and answers the challenge as d, signing with sign
// (d's own key unless the test forges); it returns the connection and the
// node's answer to the auth frame.
func connect(t *testing.T, ctx context.Context, apiURL string, d wsDevice, sign e2ee.SigningKey) (*websocket.Conn, wire.Frame) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, wsURL(apiURL), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(wire.MaxFrameSize)
	t.Cleanup(func() { c.CloseNow() })
	ch := readFrame(t, ctx, c)
	if ch.Type != wire.FrameChallenge {
		t.Fatalf("first frame is type %d, want a challenge", ch.Type)
	}
	dev := d.keys.ID()
	sig := sign.Sign(wire.DomainWSAuth, wire.WSAuthMessage(ch.Nonce, ch.PeerID, d.user, dev))
	tok, err := wire.NewSubscribeToken(d.keys, ch.PeerID, time.Now(), nil).Encode()
	if err != nil {
		t.Fatal(err)
	}
	writeFrame(t, ctx, c, wire.Frame{Type: wire.FrameAuth, User: &d.user, Device: &dev, Sig: sig, Token: tok})
	return c, readFrame(t, ctx, c)
}

func envelopeTo(t *testing.T, d wsDevice, body string) (wire.Envelope, []byte) {
	t.Helper()
	e := wire.Envelope{To: d.keys.ID(), ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: []byte(body)}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return e, b
}

// receive reads deliver frames until n envelopes arrived.
func receive(t *testing.T, ctx context.Context, c *websocket.Conn, n int) []wire.Envelope {
	t.Helper()
	var got []wire.Envelope
	for len(got) < n {
		f := readFrame(t, ctx, c)
		if f.Type != wire.FrameDeliver {
			t.Fatalf("frame type %d (%s %s) while waiting for deliveries", f.Type, f.Code, f.Message)
		}
		for _, b := range f.Envelopes {
			e, err := wire.DecodeEnvelope(b)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
		}
	}
	return got
}

func ack(d wsDevice, envs []wire.Envelope) wire.Frame {
	ids := make([]wire.EnvelopeRef, len(envs))
	for i, e := range envs {
		ids[i] = e.Ref()
	}
	return wire.Frame{Type: wire.FrameAck, Refs: wire.RefBytes(ids), Sig: d.keys.Signing.Sign(wire.DomainAck, wire.AckMessage(d.keys.ID(), ids))}
}

// pendingOn counts the envelopes for dev on every node's local mailboxes.
func pendingOn(t *testing.T, nw *testnet.Network, dev ident.DeviceID) int {
	total := 0
	for _, n := range nw.Nodes {
		c, err := n.Relay().Local().Count(dev)
		if err != nil {
			t.Fatal(err)
		}
		total += c
	}
	return total
}

func TestWebSocketDelivery(t *testing.T) {
	nw := testnet.New(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	alice := registerOpen(t, nw.Nodes[0].APIURL())
	bob := registerOpen(t, nw.Nodes[2].APIURL())

	a, ready := connect(t, ctx, nw.Nodes[0].APIURL(), alice, alice.keys.Signing)
	if ready.Type != wire.FrameReady {
		t.Fatalf("alice: %+v", ready)
	}
	b, ready := connect(t, ctx, nw.Nodes[2].APIURL(), bob, bob.keys.Signing)
	if ready.Type != wire.FrameReady {
		t.Fatalf("bob: %+v", ready)
	}

	// Online: Alice's envelope is stored on a quorum and pushed to Bob.
	e1, raw1 := envelopeTo(t, bob, "opaque-1")
	writeFrame(t, ctx, a, wire.Frame{Type: wire.FrameSend, RequestID: 1, Envelopes: [][]byte{raw1}})
	res := readFrame(t, ctx, a)
	if res.Type != wire.FrameSendResult || res.RequestID != 1 || res.Results[0].Code != "" || res.Results[0].Stored < 2 {
		t.Fatalf("send result %+v", res)
	}
	got := receive(t, ctx, b, 1)
	if got[0].ID != e1.ID || string(got[0].Ciphertext) != "opaque-1" {
		t.Fatalf("bob got %+v", got[0])
	}
	if n := pendingOn(t, nw, bob.keys.ID()); n < 2 {
		t.Fatalf("%d copies on relays before the ack, want >= 2", n)
	}
	// A forged ack deletes nothing; Bob's own ack deletes every copy.
	forged := ack(bob, got)
	forged.Sig = alice.keys.Signing.Sign(wire.DomainAck, wire.AckMessage(bob.keys.ID(), []wire.EnvelopeRef{e1.Ref()}))
	writeFrame(t, ctx, b, forged)
	if f := readFrame(t, ctx, b); f.Type != wire.FrameError || f.Code != "ack_failed" {
		t.Fatalf("forged ack answered %+v", f)
	}
	if n := pendingOn(t, nw, bob.keys.ID()); n < 2 {
		t.Fatalf("forged ack deleted copies: %d left", n)
	}
	writeFrame(t, ctx, b, ack(bob, got))
	for pendingOn(t, nw, bob.keys.ID()) != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("acked envelope still on relays")
		case <-time.After(20 * time.Millisecond):
		}
	}

	// Offline: Bob leaves, Alice sends three, Bob comes back through
	// another node and gets them in order.
	b.Close(websocket.StatusNormalClosure, "")
	var sent [][]byte
	var ids []wire.EnvelopeID
	for i := range 3 {
		e, raw := envelopeTo(t, bob, "offline-"+string(rune('a'+i)))
		sent = append(sent, raw)
		ids = append(ids, e.ID)
	}
	writeFrame(t, ctx, a, wire.Frame{Type: wire.FrameSend, RequestID: 2, Envelopes: sent})
	if res := readFrame(t, ctx, a); res.Type != wire.FrameSendResult || len(res.Results) != 3 || res.Results[2].Code != "" {
		t.Fatalf("send result %+v", res)
	}
	b2, ready := connect(t, ctx, nw.Nodes[1].APIURL(), bob, bob.keys.Signing)
	if ready.Type != wire.FrameReady {
		t.Fatalf("bob again: %+v", ready)
	}
	got = receive(t, ctx, b2, 3)
	for i := range got {
		if got[i].ID != ids[i] {
			t.Fatalf("envelope %d out of order or unknown", i)
		}
	}
	writeFrame(t, ctx, b2, ack(bob, got))
}

func TestWebSocketRejects(t *testing.T) {
	nw := testnet.New(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	url := nw.Nodes[0].APIURL()
	alice := registerOpen(t, url)
	mallory := wsDevice{keys: newKeys(t), user: alice.user}

	closeCode := func(c *websocket.Conn) websocket.StatusCode {
		_, _, err := c.Read(ctx)
		return websocket.CloseStatus(err)
	}
	t.Run("signature by another key", func(t *testing.T) {
		c, f := connect(t, ctx, url, alice, mallory.keys.Signing)
		if f.Type != wire.FrameError || f.Code != "unauthenticated" {
			t.Fatalf("answer %+v", f)
		}
		if code := closeCode(c); code != 4001 {
			t.Errorf("close code %d", code)
		}
	})
	t.Run("device not in the chain", func(t *testing.T) {
		c, f := connect(t, ctx, url, mallory, mallory.keys.Signing)
		if f.Type != wire.FrameError || f.Code != "unauthenticated" || !strings.Contains(f.Message, "not a device") {
			t.Fatalf("answer %+v", f)
		}
		closeCode(c)
	})
	t.Run("unknown user", func(t *testing.T) {
		stranger := wsDevice{keys: newKeys(t)}
		g, _ := e2ee.NewGenesis(stranger.keys, time.Now())
		stranger.user = g.UserID()
		_, f := connect(t, ctx, url, stranger, stranger.keys.Signing)
		if f.Type != wire.FrameError || f.Code != "unauthenticated" {
			t.Fatalf("answer %+v", f)
		}
	})
	t.Run("frames a client may not send", func(t *testing.T) {
		c, f := connect(t, ctx, url, alice, alice.keys.Signing)
		if f.Type != wire.FrameReady {
			t.Fatalf("answer %+v", f)
		}
		_, raw := envelopeTo(t, alice, "x")
		writeFrame(t, ctx, c, wire.Frame{Type: wire.FrameDeliver, Envelopes: [][]byte{raw}})
		if f := readFrame(t, ctx, c); f.Type != wire.FrameError || f.Code != "bad_frame" {
			t.Fatalf("answer %+v", f)
		}
		if code := closeCode(c); code != 4003 {
			t.Errorf("close code %d", code)
		}
	})
	t.Run("garbage and bad envelopes", func(t *testing.T) {
		c, _ := connect(t, ctx, url, alice, alice.keys.Signing)
		writeFrame(t, ctx, c, wire.Frame{Type: wire.FrameSend, RequestID: 9, Envelopes: [][]byte{{0xa0}}})
		f := readFrame(t, ctx, c)
		for f.Type == wire.FrameDeliver { // the flood's envelopes, still in bob's mailbox
			f = readFrame(t, ctx, c)
		}
		if f.Type != wire.FrameSendResult || f.Results[0].Code != wire.ResultBadEnvelope {
			t.Fatalf("answer %+v", f)
		}
		c.Write(ctx, websocket.MessageBinary, []byte("not cbor"))
		if f := readFrame(t, ctx, c); f.Type != wire.FrameError || f.Code != "bad_frame" {
			t.Fatalf("answer %+v", f)
		}
		// The node is still healthy and serves others.
		c2, f := connect(t, ctx, url, alice, alice.keys.Signing)
		if f.Type != wire.FrameReady {
			t.Fatalf("reconnect: %+v", f)
		}
		c2.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("a new connection supersedes the old", func(t *testing.T) {
		old, _ := connect(t, ctx, url, alice, alice.keys.Signing)
		_, f := connect(t, ctx, url, alice, alice.keys.Signing)
		if f.Type != wire.FrameReady {
			t.Fatalf("answer %+v", f)
		}
		if code := closeCode(old); code != 4002 {
			t.Errorf("old connection closed with %d", code)
		}
	})
	t.Run("connections per address", func(t *testing.T) {
		var conns []*websocket.Conn
		for range api.MaxWSConnsPerIP {
			c, _, err := websocket.Dial(ctx, wsURL(url), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			conns = append(conns, c)
		}
		_, resp, err := websocket.Dial(ctx, wsURL(url), nil)
		if err == nil || resp == nil || resp.StatusCode != 429 {
			t.Fatalf("connection over the limit: %v %v", resp, err)
		}
	})
}

func TestWebSocketFloodAndOversize(t *testing.T) {
	// A bucket of two frames refilled at one envelope a second: the third
	// frame is limited however slowly this machine sends.
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.API.WSSendRate, cfg.API.WSSendBurst = 1, 2*wire.MaxSendBatch
	}))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	url := nw.Nodes[0].APIURL()
	alice := registerOpen(t, url)
	bob := registerOpen(t, url)

	t.Run("a flood is rate limited", func(t *testing.T) {
		c, f := connect(t, ctx, url, alice, alice.keys.Signing)
		if f.Type != wire.FrameReady {
			t.Fatalf("answer %+v", f)
		}
		// Send frames of 64 envelopes until the node's burst allowance is
		// spent: the first two frames are stored, then every envelope comes
		// back rate_limited, none stored.
		limited := false
		for req := uint64(1); req <= 3 && !limited; req++ {
			var batch [][]byte
			for range wire.MaxSendBatch {
				_, raw := envelopeTo(t, bob, "flood")
				batch = append(batch, raw)
			}
			writeFrame(t, ctx, c, wire.Frame{Type: wire.FrameSend, RequestID: req, Envelopes: batch})
			res := readFrame(t, ctx, c)
			if res.Type != wire.FrameSendResult || res.RequestID != req {
				t.Fatalf("answer %+v", res)
			}
			if req <= 2 && res.Results[0].Code == wire.ResultRateLimited {
				t.Fatalf("frame %d within the burst: %+v", req, res.Results[0])
			}
			if res.Results[0].Code == wire.ResultRateLimited {
				limited = true
				for _, r := range res.Results {
					if r.Code != wire.ResultRateLimited || r.Stored != 0 {
						t.Fatalf("partly limited frame: %+v", r)
					}
				}
			}
		}
		if !limited {
			t.Fatal("no send was rate limited")
		}
		// The node still answers HTTP and new sockets.
		if st, _ := call(t, "GET", url+"/healthz", nil, nil); st != 200 {
			t.Errorf("healthz %d after the flood", st)
		}
	})
	t.Run("an oversized frame closes the socket", func(t *testing.T) {
		c, f := connect(t, ctx, url, bob, bob.keys.Signing)
		if f.Type != wire.FrameReady {
			t.Fatalf("answer %+v", f)
		}
		c.Write(ctx, websocket.MessageBinary, make([]byte, wire.MaxFrameSize+1))
		// Deliveries of the flood's envelopes (bob's mailbox) may come
		// first; the socket must then close.
		var err error
		for err == nil {
			_, _, err = c.Read(ctx)
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusMessageTooBig {
			t.Fatalf("close status %d (%v)", code, err)
		}
		if _, f := connect(t, ctx, url, bob, bob.keys.Signing); f.Type != wire.FrameReady {
			t.Fatalf("reconnect after oversize: %+v", f)
		}
	})
	t.Run("an oversized envelope is refused", func(t *testing.T) {
		c, _ := connect(t, ctx, url, bob, bob.keys.Signing)
		big := wire.Envelope{To: alice.keys.ID(), ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour,
			Ciphertext: make([]byte, wire.MaxCiphertextSize)}
		raw, err := big.Encode()
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw[:len(raw):len(raw)], 0) // one byte too many: not an envelope
		writeFrame(t, ctx, c, wire.Frame{Type: wire.FrameSend, RequestID: 1, Envelopes: [][]byte{raw}})
		f := readFrame(t, ctx, c)
		for f.Type == wire.FrameDeliver { // the flood's envelopes, still in bob's mailbox
			f = readFrame(t, ctx, c)
		}
		if f.Type != wire.FrameSendResult || f.Results[0].Code != wire.ResultBadEnvelope {
			t.Fatalf("answer %+v", f)
		}
	})
}
