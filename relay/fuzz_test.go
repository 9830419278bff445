package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/wire"
)

// seedFrames returns one valid encoding of each frame type.
func seedFrames(t testing.TB) [][]byte {
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dev := keys.ID()
	e := wire.Envelope{To: dev, ID: wire.NewEnvelopeID(), Time: time.UnixMilli(1_800_000_000_000), TTL: time.Hour, Ciphertext: []byte("sealed")}
	ids := []wire.EnvelopeRef{e.Ref()}
	tok, _ := wire.NewSubscribeToken(keys, "12D3KooWNode", e.Time, nil).Encode()
	store, _ := storeFrame(msgStore, dev, []wire.Envelope{e})
	hand, _ := storeFrame(msgHandover, dev, []wire.Envelope{e})
	push, _ := storeFrame(msgPush, dev, []wire.Envelope{e})
	frames := []frame{
		store, hand, push,
		{Type: msgSubscribe, Token: tok},
		ackFrame(keys.Public(), ids, keys.Signing.Sign(wire.DomainAck, wire.AckMessage(dev, ids))),
		{Type: msgStoreResult, Results: []string{codeOK, codeMailboxFull}},
		{Type: msgAckResult, Deleted: 1},
		{Type: msgError, Code: codeBadRequest, Message: "no"},
	}
	var out [][]byte
	for _, f := range frames {
		b, err := encodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzDecodeRequest(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		// What decodes is within the limits and, for acks, verified.
		switch r.Type {
		case msgStore, msgHandover:
			if len(r.Envelopes) == 0 || len(r.Envelopes) > MaxBatch {
				t.Fatalf("%d envelopes accepted", len(r.Envelopes))
			}
			for _, e := range r.Envelopes {
				if e.Check() != nil {
					t.Fatal("bad envelope accepted")
				}
			}
		case msgAck:
			if verifyAck(r.Public, r.Refs, r.Sig) != nil || !r.Public.ID().Equal(r.Device) {
				t.Fatal("unverified ack accepted")
			}
		case msgSubscribe:
			if r.Device.IsZero() {
				t.Fatal("subscribe without a device accepted")
			}
		default:
			t.Fatalf("request type %d accepted", r.Type)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReply(b)
		if err != nil {
			return
		}
		switch r.Type {
		case msgStoreResult:
			if len(r.Results) == 0 || len(r.Results) > MaxBatch {
				t.Fatalf("%d results accepted", len(r.Results))
			}
		case msgPush:
			for _, e := range r.Envelopes {
				if e.Check() != nil {
					t.Fatal("bad envelope accepted")
				}
			}
		case msgAckResult, msgError:
		default:
			t.Fatalf("reply type %d accepted", r.Type)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	for _, b := range seedFrames(f) {
		var buf bytes.Buffer
		writeFrame(&buf, frame{Type: msgAckResult, Deleted: 3})
		buf.Write(b[:min(len(b), 8)])
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			fr, err := readFrame(r)
			if err != nil {
				return
			}
			if len(fr) == 0 || len(fr) > MaxFrameSize {
				t.Fatalf("frame of %d bytes read", len(fr))
			}
		}
	})
}
