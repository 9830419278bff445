package ident

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

func TestDeviceIDRoundTrip(t *testing.T) {
	id := testDevice(t, "id").ID()
	s := id.String()
	if !strings.HasPrefix(s, "b") || len(s) != IDTextSize {
		t.Fatalf("device ID text %q", s)
	}
	p, err := ParseDeviceID(s)
	if err != nil || !p.Equal(id) || p != id {
		t.Fatalf("parse: %v", err)
	}
	q, err := DeviceIDFromBytes(id.Bytes())
	if err != nil || !q.Equal(id) {
		t.Fatalf("from bytes: %v", err)
	}
	b, err := id.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	var r DeviceID
	if err := r.UnmarshalCBOR(b); err != nil || !r.Equal(id) {
		t.Fatalf("cbor: %v", err)
	}
	if _, err := (DeviceID{}).MarshalCBOR(); !errors.Is(err, ErrBadID) {
		t.Fatalf("zero ID marshals: %v", err)
	}
	if (DeviceID{}).String() != "DeviceID(undefined)" || !(DeviceID{}).IsZero() {
		t.Fatal("zero ID")
	}
}

func TestParseIDRejects(t *testing.T) {
	good := testDevice(t, "id").ID().String()
	bad := map[string]string{
		"empty":      "",
		"upper case": strings.ToUpper(good[:1]) + strings.ToUpper(good[1:]),
		"base58 v0":  "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
		"base36":     "k" + good[1:],
		"short":      good[:len(good)-1],
		"long":       good + "a",
		"bad char":   good[:10] + "1" + good[11:],
		// dag-pb codec (0x70) instead of raw:
		"dag-pb": "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
		// identity hash:
		"identity": "bafkqaaa",
	}
	for name, s := range bad {
		if _, err := ParseDeviceID(s); !errors.Is(err, ErrBadID) {
			t.Errorf("device ID %s %q: %v", name, s, err)
		}
		if _, err := ParseUserID(s); !errors.Is(err, ErrBadID) {
			t.Errorf("user ID %s %q: %v", name, s, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 36), append([]byte{1, 0x71, 0x12, 0x20}, make([]byte, 32)...)} {
		if _, err := DeviceIDFromBytes(b); !errors.Is(err, ErrBadID) {
			t.Errorf("from bytes %x: %v", b, err)
		}
	}
}

// testDevice is a device's public keys derived from label.
func testDevice(t testing.TB, label string) DevicePublic {
	t.Helper()
	seed := sha256.Sum256([]byte("ident test " + label))
	priv, err := MessagingKEM().NewPrivateKey(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return DevicePublic{
		Signing:   SigningPublicOf(ed25519.NewKeyFromSeed(seed[:])),
		Messaging: MessagingPublicOf(priv.PublicKey()),
	}
}
