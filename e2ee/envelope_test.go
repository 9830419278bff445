package e2ee

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"testing/cryptotest"

	"github.com/volo-chat/volo/ident"
)

func TestEnvelopeSealOpen(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 2)
	body := []byte("an encoded message")
	for _, kind := range []EnvelopeKind{EnvelopeMessage, EnvelopeKeyBundle} {
		ct, err := SealEnvelope(bob.keys[0].Public(), kind, alice.id(), body)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ct, body) || bytes.Contains(ct, alice.id().Bytes()) {
			t.Fatal("sealed envelope shows the body or the sender in clear")
		}
		got, err := OpenEnvelope(bob.keys[0], ct)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != kind || !got.Sender.Equal(alice.id()) || !bytes.Equal(got.Body, body) {
			t.Fatalf("opened %+v", got)
		}
		// Another device, even of the same user, cannot open it.
		if _, err := OpenEnvelope(bob.keys[1], ct); !errors.Is(err, ErrEnvelopeOpen) {
			t.Fatalf("opened by another device: %v, want ErrEnvelopeOpen", err)
		}
		// Every changed byte is refused.
		for i := 0; i < len(ct); i += 37 {
			bad := bytes.Clone(ct)
			bad[i] ^= 0x80
			if _, err := OpenEnvelope(bob.keys[0], bad); !errors.Is(err, ErrEnvelopeOpen) {
				t.Fatalf("byte %d changed: %v, want ErrEnvelopeOpen", i, err)
			}
		}
		if _, err := OpenEnvelope(bob.keys[0], ct[:len(ct)-1]); !errors.Is(err, ErrEnvelopeOpen) {
			t.Fatalf("truncated: %v", err)
		}
	}
	// Two seals of the same content differ (fresh HPKE encapsulation).
	a, _ := SealEnvelope(bob.keys[0].Public(), EnvelopeMessage, alice.id(), body)
	b, _ := SealEnvelope(bob.keys[0].Public(), EnvelopeMessage, alice.id(), body)
	if bytes.Equal(a, b) {
		t.Fatal("two seals are equal")
	}
}

func TestEnvelopeSealRefusesBadInput(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	to := bob.keys[0].Public()
	cases := map[string]func() error{
		"kind 0":     func() error { _, err := SealEnvelope(to, 0, alice.id(), []byte("x")); return err },
		"kind 3":     func() error { _, err := SealEnvelope(to, 3, alice.id(), []byte("x")); return err },
		"no sender":  func() error { _, err := SealEnvelope(to, EnvelopeMessage, ident.UserID{}, []byte("x")); return err },
		"empty body": func() error { _, err := SealEnvelope(to, EnvelopeMessage, alice.id(), nil); return err },
		"large body": func() error {
			_, err := SealEnvelope(to, EnvelopeMessage, alice.id(), make([]byte, MaxSealedBodySize+1))
			return err
		},
		"no key": func() error {
			_, err := SealEnvelope(ident.DevicePublic{}, EnvelopeMessage, alice.id(), []byte("x"))
			return err
		},
	}
	for name, f := range cases {
		if f() == nil {
			t.Errorf("%s: sealed", name)
		}
	}
	// The largest body fits in the largest sealed envelope.
	ct, err := SealEnvelope(to, EnvelopeMessage, alice.id(), make([]byte, MaxSealedBodySize))
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) > MaxSealedEnvelopeSize {
		t.Fatalf("largest envelope %d bytes, limit %d", len(ct), MaxSealedEnvelopeSize)
	}
	if _, err := OpenEnvelope(bob.keys[0], ct); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEnvelope(bob.keys[0], make([]byte, MaxSealedEnvelopeSize+1)); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestSealedContentDecoding(t *testing.T) {
	alice := newMsgUser(t, "alice", 1)
	good := marshalCBOR(sealedContentWire{Kind: 1, Sender: alice.id().Bytes(), Body: []byte("b")})
	if c, err := decodeSealedContent(good); err != nil || c.Kind != EnvelopeMessage {
		t.Fatalf("%+v %v", c, err)
	}
	bad := map[string][]byte{
		"kind 0":     marshalCBOR(sealedContentWire{Kind: 0, Sender: alice.id().Bytes(), Body: []byte("b")}),
		"kind 256":   marshalCBOR(sealedContentWire{Kind: 256 + 1, Sender: alice.id().Bytes(), Body: []byte("b")}),
		"no body":    marshalCBOR(sealedContentWire{Kind: 1, Sender: alice.id().Bytes()}),
		"no sender":  marshalCBOR(map[int]any{1: 1, 3: []byte("b")}),
		"extra key":  marshalCBOR(map[int]any{1: 1, 2: alice.id().Bytes(), 3: []byte("b"), 4: 0}),
		"bad sender": marshalCBOR(map[int]any{1: 1, 2: []byte("short"), 3: []byte("b")}),
		"trailing":   append(bytes.Clone(good), 0),
		"not cbor":   {0xff},
	}
	for name, b := range bad {
		if _, err := decodeSealedContent(b); !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type envelopeVector struct {
	Comment      string `json:"comment"`
	GlobalRandom uint64 `json:"cryptotest_global_random_seed"`
	Recipient    string `json:"recipient_device_id"`
	Info         string `json:"hpke_info"`
	Sender       string `json:"sender_user_id"`
	Kind         uint8  `json:"kind"`
	Body         string `json:"body"`
	Content      string `json:"sealed_content_cbor"`
	Envelope     string `json:"envelope"`
}

const envelopeVectorSeed = 5

func makeEnvelopeVector(t *testing.T) (envelopeVector, *msgUser) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	body := []byte("volo envelope vector body")
	cryptotest.SetGlobalRandom(t, envelopeVectorSeed)
	ct, err := SealEnvelope(bob.keys[0].Public(), EnvelopeMessage, alice.id(), body)
	if err != nil {
		t.Fatal(err)
	}
	return envelopeVector{
		Comment:      "alice seals a message body to bob's device 0; HPKE randomness from testing/cryptotest.SetGlobalRandom(seed)",
		GlobalRandom: envelopeVectorSeed,
		Recipient:    bob.keys[0].ID().String(),
		Info:         hex.EncodeToString(envelopeInfo(bob.keys[0].ID())),
		Sender:       alice.id().String(),
		Kind:         uint8(EnvelopeMessage),
		Body:         hex.EncodeToString(body),
		Content:      hex.EncodeToString(marshalCBOR(sealedContentWire{Kind: 1, Sender: alice.id().Bytes(), Body: body})),
		Envelope:     hex.EncodeToString(ct),
	}, bob
}

func TestEnvelopeVectors(t *testing.T) {
	got, bob := makeEnvelopeVector(t)
	checkVectorFile(t, "envelope_vectors.json", got)

	var v envelopeVector
	readVectorFile(t, "envelope_vectors.json", &v)
	c, err := OpenEnvelope(bob.keys[0], mustHex(t, v.Envelope))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sender.String() != v.Sender || uint8(c.Kind) != v.Kind || hex.EncodeToString(c.Body) != v.Body {
		t.Fatalf("vector opens to %+v", c)
	}
	if hex.EncodeToString(marshalCBOR(sealedContentWire{Kind: uint64(c.Kind), Sender: c.Sender.Bytes(), Body: c.Body})) != v.Content {
		t.Fatal("sealed content does not re-encode to the vector bytes")
	}
	if hex.EncodeToString(envelopeInfo(bob.keys[0].ID())) != v.Info {
		t.Fatal("HPKE info differs")
	}
}

func FuzzOpenEnvelope(f *testing.F) {
	alice, bob := newMsgUser(f, "alice", 1), newMsgUser(f, "bob", 1)
	ct, err := SealEnvelope(bob.keys[0].Public(), EnvelopeKeyBundle, alice.id(), []byte("fuzz body"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ct)
	f.Add(ct[:hpkeEncSize+16])
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := OpenEnvelope(bob.keys[0], data)
		if err != nil {
			if !isOneOf(err, ErrEnvelopeOpen, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if c.Sender.IsZero() || len(c.Body) == 0 {
			t.Fatalf("opened an invalid content %+v", c)
		}
	})
}

func FuzzDecodeSealedContent(f *testing.F) {
	alice := newMsgUser(f, "alice", 1)
	f.Add(marshalCBOR(sealedContentWire{Kind: 1, Sender: alice.id().Bytes(), Body: []byte("b")}))
	f.Add(marshalCBOR(sealedContentWire{Kind: 2, Sender: alice.id().Bytes(), Body: bytes.Repeat([]byte{7}, 100)}))
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeSealedContent(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !bytes.Equal(marshalCBOR(sealedContentWire{Kind: uint64(c.Kind), Sender: c.Sender.Bytes(), Body: c.Body}), data) {
			t.Fatal("decoded content does not re-encode to its input")
		}
	})
}
