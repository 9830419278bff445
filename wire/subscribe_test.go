package wire

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestSubscribeToken(t *testing.T) {
	_, keys := testKeys(t)
	_, other := testKeys(t)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	const node = "12D3KooWNode"
	verifier := bytes.Repeat([]byte{7}, DeliveryVerifierSize)
	tok := NewSubscribeToken(keys, node, now, verifier)
	b, err := tok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSubscribeToken(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Device.Equal(keys.ID()) || got.Node != node || !got.Time.Equal(now) || !bytes.Equal(got.Delivery, verifier) {
		t.Fatalf("decoded %+v", got)
	}
	if err := got.CheckFor(node, now.Add(SubscribeTokenLifetime)); err != nil {
		t.Errorf("token within its lifetime: %v", err)
	}
	for name, err := range map[string]error{
		"another node": got.CheckFor("12D3KooWOther", now),
		"aged out":     got.CheckFor(node, now.Add(SubscribeTokenLifetime+MaxClockSkew+time.Millisecond)),
		"future":       got.CheckFor(node, now.Add(-MaxClockSkew-time.Millisecond)),
	} {
		if !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Keys of another device, a signature by another key, a changed field.
	swapped := tok
	swapped.Public = other.Public()
	forged := tok
	forged.Sig = other.Signing.Sign(DomainSubscribe, tok.SignedBytes())
	moved := tok
	moved.Node = "12D3KooWOther"
	for name, bad := range map[string]SubscribeToken{"swapped keys": swapped, "forged": forged, "moved": moved} {
		b, err := bad.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSubscribeToken(b); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := DecodeSubscribeToken(append(b, 0)); !errors.Is(err, ErrBadToken) {
		t.Errorf("trailing byte: %v", err)
	}
}

func FuzzDecodeSubscribeToken(f *testing.F) {
	_, keys := testKeys(f)
	b, err := NewSubscribeToken(keys, "12D3KooWNode", time.UnixMilli(1_700_000_000_000), bytes.Repeat([]byte{1}, 32)).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := DecodeSubscribeToken(b)
		if err != nil {
			return
		}
		again, err := tok.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted token does not re-encode to itself: %v", err)
		}
	})
}
