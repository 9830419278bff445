package wire

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func testDevice(t testing.TB) ident.DeviceID {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

func env(to ident.DeviceID, body string, ttl time.Duration) Envelope {
	return Envelope{To: to, ID: NewEnvelopeID(), Time: t0, TTL: ttl, Ciphertext: []byte(body)}
}

func TestEnvelopeRoundTripAndLimits(t *testing.T) {
	dev := testDevice(t)
	e := env(dev, "payload", DefaultTTL)
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.To != e.To || got.ID != e.ID || !got.Time.Equal(e.Time) || got.TTL != e.TTL || string(got.Ciphertext) != "payload" {
		t.Errorf("round trip: %+v", got)
	}
	bad := []Envelope{
		{ID: e.ID, Time: t0, TTL: time.Hour, Ciphertext: []byte("x")},
		{To: dev, Time: t0, TTL: time.Hour, Ciphertext: []byte("x")},
		{To: dev, ID: e.ID, Time: t0, TTL: 0, Ciphertext: []byte("x")},
		{To: dev, ID: e.ID, Time: t0, TTL: MaxTTL + time.Second, Ciphertext: []byte("x")},
		{To: dev, ID: e.ID, Time: t0, TTL: time.Hour},
		{To: dev, ID: e.ID, Time: t0, TTL: time.Hour, Ciphertext: make([]byte, MaxCiphertextSize+1)},
	}
	for i, e := range bad {
		if _, err := e.Encode(); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("bad envelope %d: %v", i, err)
		}
	}
	for i := range b {
		tampered := bytes.Clone(b)
		tampered[i] ^= 0x01
		if d, err := DecodeEnvelope(tampered); err == nil {
			if d.To == e.To && d.ID == e.ID && d.TTL == e.TTL && d.Time.Equal(e.Time) && string(d.Ciphertext) == "payload" {
				t.Errorf("byte %d flipped and decoded to the same envelope", i)
			}
		}
	}
	if _, err := DecodeEnvelope(append(b, 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	dev, _ := e2ee.GenerateDeviceKeys(rand.Reader)
	e := Envelope{To: dev.ID(), ID: EnvelopeID{1}, Time: t0, TTL: time.Hour, Ciphertext: []byte("fuzz")}
	b, _ := e.Encode()
	f.Add(b)
	e.Delivery = bytes.Repeat([]byte{9}, DeliveryVerifierSize)
	b, _ = e.Encode()
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEnvelope(data)
		if err != nil {
			return
		}
		again, err := e.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("decoded envelope does not re-encode to its input: %v", err)
		}
	})
}

type keysOf struct {
	user ident.UserID
	dev  ident.DeviceID
}

// testKeys makes a device and the user whose genesis names it.
func testKeys(t testing.TB) (keysOf, e2ee.DeviceKeys) {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(k, t0)
	if err != nil {
		t.Fatal(err)
	}
	return keysOf{user: g.UserID(), dev: k.ID()}, k
}

func TestEnvelopeDeliveryKeyAndRef(t *testing.T) {
	dev, _ := e2ee.GenerateDeviceKeys(rand.Reader)
	e := Envelope{To: dev.ID(), ID: EnvelopeID{1}, Time: t0, TTL: time.Hour, Ciphertext: []byte("x"), Delivery: bytes.Repeat([]byte{9}, DeliveryVerifierSize)}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(b)
	if err != nil || !bytes.Equal(got.Delivery, e.Delivery) {
		t.Fatalf("delivery key does not round-trip: %v", err)
	}
	e.Delivery = []byte{1, 2}
	if err := e.Check(); !errors.Is(err, ErrBadEnvelope) {
		t.Errorf("short delivery key: %v", err)
	}
	other := got
	other.Ciphertext = []byte("y")
	if got.Ref() == other.Ref() || got.Ref().ID != other.Ref().ID {
		t.Error("references of one ID and two ciphertexts")
	}
	if r, err := ParseEnvelopeRef(got.Ref().Bytes()); err != nil || r != got.Ref() {
		t.Errorf("reference does not round-trip: %v", err)
	}
}
