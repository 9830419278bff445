package wire

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"
)

// relayVectors are byte vectors of the relay formats for other
// implementations: a subscribe token, what its device signed, and an
// envelope with its reference.
type relayVectors struct {
	Comment           string `json:"comment"`
	Device            string `json:"device"`
	DeviceSigningPub  string `json:"device_signing_public"` // hex
	Node              string `json:"node"`
	TokenTime         int64  `json:"token_time_ms"`
	DeliveryKey       string `json:"delivery_key"`      // hex
	DeliveryVerifier  string `json:"delivery_verifier"` // hex
	TokenSignedBytes  string `json:"token_signed_bytes"`
	TokenSignature    string `json:"token_signature"`
	Token             string `json:"token"`
	Envelope          string `json:"envelope"`
	EnvelopeReference string `json:"envelope_reference"`
}

func makeRelayVectors(t *testing.T) relayVectors {
	keys := seededKeys(t, 0x30)
	const node = "12D3KooWExampleNode"
	delivery := bytes.Repeat([]byte{0x44}, 32)
	tok := NewSubscribeToken(keys, node, t0, DeliveryVerifier(delivery))
	tb, err := tok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var id EnvelopeID
	copy(id[:], bytes.Repeat([]byte{0x07}, EnvelopeIDSize))
	e := Envelope{To: keys.ID(), ID: id, Time: t0, TTL: 24 * time.Hour, Ciphertext: []byte("an envelope seal's bytes"), Delivery: delivery}
	eb, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return relayVectors{
		Comment:           "device of signing seed 0x30 (messaging seed 0x31) lets node 12D3KooWExampleNode read its mailbox at 2026-11-21T12:00Z and registers delivery key 0x44×32; an envelope to it carries that key",
		Device:            keys.ID().String(),
		DeviceSigningPub:  hex.EncodeToString(keys.Public().Signing.Bytes()),
		Node:              node,
		TokenTime:         t0.UnixMilli(),
		DeliveryKey:       hex.EncodeToString(delivery),
		DeliveryVerifier:  hex.EncodeToString(DeliveryVerifier(delivery)),
		TokenSignedBytes:  hex.EncodeToString(tok.SignedBytes()),
		TokenSignature:    hex.EncodeToString(tok.Sig),
		Token:             hex.EncodeToString(tb),
		Envelope:          hex.EncodeToString(eb),
		EnvelopeReference: hex.EncodeToString(e.Ref().Bytes()),
	}
}

func TestRelayVectors(t *testing.T) {
	v := vectorFile(t, "relay_vectors.json", makeRelayVectors(t))
	tb, _ := hex.DecodeString(v.Token)
	tok, err := DecodeSubscribeToken(tb)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.CheckFor(v.Node, time.UnixMilli(v.TokenTime)); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(tok.SignedBytes()) != v.TokenSignedBytes || hex.EncodeToString(tok.Delivery) != v.DeliveryVerifier {
		t.Error("the decoded token does not give the vector's signed bytes and verifier")
	}
	sig, _ := hex.DecodeString(v.TokenSignature)
	signed, _ := hex.DecodeString(v.TokenSignedBytes)
	if err := tok.Public.Signing.Verify(DomainSubscribe, signed, sig); err != nil {
		t.Errorf("signature over the signed bytes: %v", err)
	}
	eb, _ := hex.DecodeString(v.Envelope)
	e, err := DecodeEnvelope(eb)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(e.Ref().Bytes()) != v.EnvelopeReference || !e.To.Equal(tok.Device) {
		t.Error("the decoded envelope does not give the vector's reference")
	}
}
