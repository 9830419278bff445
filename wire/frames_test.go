package wire

import (
	"bytes"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	k, _ := testKeys(t)
	user := k.user
	dev := k.dev
	e, _ := env(dev, "x", DefaultTTL).Encode()
	id := NewEnvelopeID()
	frames := []Frame{
		{Type: FrameChallenge, Nonce: bytes.Repeat([]byte{1}, 32), PeerID: "12D3KooW"},
		{Type: FrameAuth, User: &user, Device: &dev, Sig: make([]byte, 64)},
		{Type: FrameReady},
		{Type: FrameSend, RequestID: 7, Envelopes: [][]byte{e}},
		{Type: FrameSendResult, RequestID: 7, Results: []SendResult{{Stored: 2}, {Code: ResultMailboxFull}}},
		{Type: FrameDeliver, Envelopes: [][]byte{e, e}},
		{Type: FrameAck, IDs: [][]byte{id[:]}, Sig: make([]byte, 64)},
		{Type: FrameError, Code: "unauthenticated", Message: "answer the challenge first"},
	}
	for _, f := range frames {
		b, err := f.Encode()
		if err != nil {
			t.Fatalf("type %d: %v", f.Type, err)
		}
		g, err := DecodeFrame(b)
		if err != nil {
			t.Fatalf("type %d: %v", f.Type, err)
		}
		again, _ := g.Encode()
		if !bytes.Equal(again, b) {
			t.Errorf("type %d does not round-trip", f.Type)
		}
	}
	bad := []Frame{
		{Type: 99},
		{Type: FrameChallenge, PeerID: "p"},
		{Type: FrameAuth, User: &user, Sig: make([]byte, 64)},
		{Type: FrameSend, RequestID: 1},
		{Type: FrameSend, Envelopes: make([][]byte, MaxSendBatch+1)},
		{Type: FrameAck, IDs: [][]byte{{1, 2}}, Sig: make([]byte, 64)},
		{Type: FrameAck, IDs: [][]byte{id[:]}},
		{Type: FrameError},
	}
	for i, f := range bad {
		if _, err := f.Encode(); err == nil {
			t.Errorf("bad frame %d encoded", i)
		}
	}
	if _, err := DecodeFrame(make([]byte, MaxFrameSize+1)); err == nil {
		t.Error("oversized frame decoded")
	}
}

func TestSignedMessagesBindEverything(t *testing.T) {
	k, _ := testKeys(t)
	other, _ := testKeys(t)
	nonce := bytes.Repeat([]byte{9}, 32)
	base := WSAuthMessage(nonce, "peerA", k.user, k.dev)
	for name, m := range map[string][]byte{
		"nonce":  WSAuthMessage(bytes.Repeat([]byte{8}, 32), "peerA", k.user, k.dev),
		"peer":   WSAuthMessage(nonce, "peerB", k.user, k.dev),
		"user":   WSAuthMessage(nonce, "peerA", other.user, k.dev),
		"device": WSAuthMessage(nonce, "peerA", k.user, other.dev),
	} {
		if bytes.Equal(m, base) {
			t.Errorf("auth message does not bind the %s", name)
		}
	}
	a, b := NewEnvelopeID(), NewEnvelopeID()
	if bytes.Equal(AckMessage(k.dev, []EnvelopeID{a}), AckMessage(other.dev, []EnvelopeID{a})) ||
		bytes.Equal(AckMessage(k.dev, []EnvelopeID{a}), AckMessage(k.dev, []EnvelopeID{a, b})) {
		t.Error("ack message does not bind device and IDs")
	}
	if got := IDsOf([][]byte{a[:], b[:]}); got[0] != a || got[1] != b {
		t.Error("IDsOf")
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range []Frame{
		{Type: FrameChallenge, Nonce: bytes.Repeat([]byte{1}, 32), PeerID: "p"},
		{Type: FrameSend, RequestID: 1, Envelopes: [][]byte{{1}}},
		{Type: FrameAck, IDs: [][]byte{make([]byte, 16)}, Sig: make([]byte, 64)},
		{Type: FrameError, Code: "x"},
	} {
		b, _ := fr.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeFrame(data)
		if err != nil {
			return
		}
		if _, err := fr.Encode(); err != nil {
			t.Fatalf("decoded frame does not encode: %v", err)
		}
	})
}
