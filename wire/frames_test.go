package wire

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
)

func TestFramesRoundTrip(t *testing.T) {
	k, _ := testKeys(t)
	user := k.user
	dev := k.dev
	e, _ := env(dev, "x", DefaultTTL).Encode()
	id := NewEnvelopeID()
	ref := EnvelopeRef{ID: id}.Bytes()
	frames := []Frame{
		{Type: FrameChallenge, Nonce: bytes.Repeat([]byte{1}, 32), PeerID: "12D3KooW"},
		{Type: FrameAuth, User: &user, Device: &dev, Sig: make([]byte, 64), Token: []byte{0xa0}},
		{Type: FrameReady},
		{Type: FrameToken, Token: []byte{0xa0}},
		{Type: FrameSend, RequestID: 7, Envelopes: [][]byte{e}},
		{Type: FrameSendResult, RequestID: 7, Results: []SendResult{{Stored: 2}, {Code: ResultMailboxFull}}},
		{Type: FrameDeliver, Envelopes: [][]byte{e, e}},
		{Type: FrameAck, Refs: [][]byte{ref}, Sig: make([]byte, 64)},
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
		{Type: FrameAuth, User: &user, Device: &dev, Sig: make([]byte, 64)},
		{Type: FrameToken},
		{Type: FrameToken, Token: make([]byte, MaxSubscribeTokenSize+1)},
		{Type: FrameSend, RequestID: 1},
		{Type: FrameSend, Envelopes: make([][]byte, MaxSendBatch+1)},
		{Type: FrameAck, Refs: [][]byte{{1, 2}}, Sig: make([]byte, 64)},
		{Type: FrameAck, Refs: [][]byte{id[:]}, Sig: make([]byte, 64)},
		{Type: FrameAck, Refs: [][]byte{ref}},
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
	a, b := env(k.dev, "a", DefaultTTL).Ref(), env(k.dev, "b", DefaultTTL).Ref()
	sameID := EnvelopeRef{ID: a.ID, Hash: b.Hash}
	if bytes.Equal(AckMessage(k.dev, []EnvelopeRef{a}), AckMessage(other.dev, []EnvelopeRef{a})) ||
		bytes.Equal(AckMessage(k.dev, []EnvelopeRef{a}), AckMessage(k.dev, []EnvelopeRef{a, b})) ||
		bytes.Equal(AckMessage(k.dev, []EnvelopeRef{a}), AckMessage(k.dev, []EnvelopeRef{sameID})) {
		t.Error("ack message does not bind device, IDs and hashes")
	}
	if got, err := RefsOf(RefBytes([]EnvelopeRef{a, b})); err != nil || got[0] != a || got[1] != b {
		t.Errorf("RefsOf: %v", err)
	}
	if _, err := RefsOf([][]byte{a.ID[:]}); err == nil {
		t.Error("RefsOf took a bare ID")
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range []Frame{
		{Type: FrameChallenge, Nonce: bytes.Repeat([]byte{1}, 32), PeerID: "p"},
		{Type: FrameSend, RequestID: 1, Envelopes: [][]byte{{1}}},
		{Type: FrameAck, Refs: [][]byte{make([]byte, EnvelopeRefSize)}, Sig: make([]byte, 64)},
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

// largestEnvelope is an envelope whose every field takes its longest
// encoding: the largest ciphertext, TTL and time.
func largestEnvelope(t testing.TB, to ident.DeviceID) []byte {
	t.Helper()
	e := Envelope{To: to, ID: NewEnvelopeID(), Time: time.UnixMilli(1 << 53), TTL: MaxTTL,
		Ciphertext: bytes.Repeat([]byte{0xa5}, MaxCiphertextSize)}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeEnvelope(b); err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxEnvelopeSize {
		t.Fatalf("largest envelope encodes to %d bytes, MaxEnvelopeSize is %d", len(b), MaxEnvelopeSize)
	}
	return b
}

func TestLargestEnvelopeFitsOneFrame(t *testing.T) {
	k, _ := testKeys(t)
	for name, e := range map[string][]byte{
		"largest envelope":      largestEnvelope(t, k.dev),
		"MaxEnvelopeSize bytes": make([]byte, MaxEnvelopeSize),
	} {
		for _, f := range []Frame{
			{Type: FrameSend, RequestID: math.MaxUint64, Envelopes: [][]byte{e}},
			{Type: FrameDeliver, Envelopes: [][]byte{e}},
		} {
			if n := PackEnvelopes(f.Envelopes); n != 1 {
				t.Errorf("%s: packed %d of 1", name, n)
			}
			b, err := f.Encode()
			if err != nil {
				t.Fatalf("%s, frame type %d: %v", name, f.Type, err)
			}
			if len(b) > MaxFrameSize {
				t.Fatalf("%s, frame type %d: %d bytes, MaxFrameSize is %d", name, f.Type, len(b), MaxFrameSize)
			}
			if _, err := DecodeFrame(b); err != nil {
				t.Fatalf("%s, frame type %d: %v", name, f.Type, err)
			}
		}
	}
}

func TestByteStringSize(t *testing.T) {
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, MaxEnvelopeSize} {
		b, err := encMode.Marshal(make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		if got := byteStringSize(n); got != len(b) {
			t.Errorf("byteStringSize(%d) = %d, encoding has %d bytes", n, got, len(b))
		}
	}
}

// TestEnvelopeFrameOverhead checks the bound PackEnvelopes counts on: a
// send or deliver frame encodes to at most envelopeFrameOverhead bytes
// beyond its envelopes' byte strings, exactly that for the longest request
// ID and array head.
func TestEnvelopeFrameOverhead(t *testing.T) {
	for _, n := range []int{1, 23, 24, MaxSendBatch} {
		envs := make([][]byte, n)
		strs := 0
		for i := range envs {
			envs[i] = make([]byte, 100+i)
			strs += byteStringSize(len(envs[i]))
		}
		for _, f := range []Frame{
			{Type: FrameSend, RequestID: 1, Envelopes: envs},
			{Type: FrameSend, RequestID: math.MaxUint64, Envelopes: envs},
			{Type: FrameDeliver, Envelopes: envs},
		} {
			b, err := f.Encode()
			if err != nil {
				t.Fatal(err)
			}
			overhead := len(b) - strs
			if overhead > envelopeFrameOverhead {
				t.Errorf("%d envelopes, type %d, request ID %d: overhead %d bytes, bound %d", n, f.Type, f.RequestID, overhead, envelopeFrameOverhead)
			}
			if n >= 24 && f.RequestID == math.MaxUint64 && overhead != envelopeFrameOverhead {
				t.Errorf("%d envelopes, longest request ID: overhead %d bytes, want exactly %d", n, overhead, envelopeFrameOverhead)
			}
		}
	}
}

func TestPackEnvelopes(t *testing.T) {
	k, _ := testKeys(t)
	largest := largestEnvelope(t, k.dev)
	small, _ := env(k.dev, "x", DefaultTTL).Encode()
	repeat := func(b []byte, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = b
		}
		return out
	}
	// An envelope of s bytes takes byteStringSize(s) = s+5 in a frame:
	// eight of size fit exactly fill a frame of the longest overhead.
	fit := (MaxFrameSize-envelopeFrameOverhead)/8 - 5
	for name, c := range map[string]struct {
		envs          [][]byte
		first, frames int
	}{
		"none":                 {nil, 0, 0},
		"100 largest":          {repeat(largest, 100), 7, 15},
		"200 small":            {repeat(small, 200), MaxSendBatch, 4},
		"small then large":     {append(repeat(small, 30), repeat(largest, 20)...), 37, 3},
		"large then small":     {append(repeat(largest, 20), repeat(small, 130)...), 7, 5},
		"exactly at the limit": {repeat(make([]byte, fit), 9), 8, 2},
		"one byte over":        {repeat(make([]byte, fit+1), 9), 7, 2},
	} {
		envs := c.envs
		if n := PackEnvelopes(envs); n != c.first {
			t.Errorf("%s: first frame of %d envelopes, want %d", name, n, c.first)
		}
		frames, total := 0, 0
		for rest := envs; len(rest) > 0; frames++ {
			n := PackEnvelopes(rest)
			if n < 1 || n > MaxSendBatch || n > len(rest) {
				t.Fatalf("%s: packed %d of %d", name, n, len(rest))
			}
			for _, f := range []Frame{
				{Type: FrameSend, RequestID: math.MaxUint64, Envelopes: rest[:n]},
				{Type: FrameDeliver, Envelopes: rest[:n]},
			} {
				if _, err := f.Encode(); err != nil {
					t.Fatalf("%s: frame %d of %d envelopes: %v", name, frames, n, err)
				}
			}
			// The frame is full: one more envelope would break a limit.
			if n < len(rest) && n < MaxSendBatch {
				size := envelopeFrameOverhead
				for _, b := range rest[:n+1] {
					size += byteStringSize(len(b))
				}
				if size <= MaxFrameSize {
					t.Errorf("%s: frame %d holds %d envelopes, %d would fit", name, frames, n, n+1)
				}
			}
			total += n
			rest = rest[n:]
		}
		if total != len(envs) || frames != c.frames {
			t.Errorf("%s: packed %d of %d envelopes in %d frames, want %d frames", name, total, len(envs), frames, c.frames)
		}
	}
	if n := PackEnvelopes([][]byte{make([]byte, MaxFrameSize), small}); n != 1 {
		t.Errorf("an envelope over the frame limit is packed with %d others", n-1)
	}
	if _, err := (Frame{Type: FrameDeliver, Envelopes: [][]byte{make([]byte, MaxFrameSize)}}).Encode(); err == nil {
		t.Error("a frame over MaxFrameSize encoded")
	}
}
