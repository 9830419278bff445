package e2ee

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volo-chat/volo/ident"
)

// The -update flag regenerates the committed test vectors. It is looked up
// rather than defined here if another test file of the package defines it.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the test vectors in testdata/")
	}
}

func updatingVectors() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// detRand returns a deterministic randomness source named by label.
func detRand(label string) *mrand.ChaCha8 {
	return mrand.NewChaCha8(sha256.Sum256([]byte("volo test randomness " + label)))
}

// fixedDeviceKeys returns the device keys named by label, the same on every run.
func fixedDeviceKeys(t testing.TB, label string) DeviceKeys {
	t.Helper()
	k, err := GenerateDeviceKeys(detRand(label))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkVectorFile compares got (JSON-encoded) with the committed file, or
// rewrites the file under -update.
func checkVectorFile(t *testing.T, name string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	path := filepath.Join("testdata", name)
	if updatingVectors() {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vectors (run with -update to create): %v", err)
	}
	if !bytes.Equal(want, b) {
		t.Fatalf("%s: regenerated vectors differ from the committed file (run with -update only if the format change is intended)\ngot:\n%s", path, b)
	}
}

// readVectorFile decodes a committed vector file into v.
func readVectorFile(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeviceKeysRoundTrip(t *testing.T) {
	k, err := GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseDeviceKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Signing.Equal(k.Signing) || !k2.Messaging.Equal(k.Messaging) {
		t.Fatal("keys differ after round trip")
	}
	if !k2.ID().Equal(k.ID()) || !k2.Public().Equal(k.Public()) {
		t.Fatal("public keys differ after round trip")
	}
	pub, err := ident.DecodeDevicePublic(k.Public().Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(k.Public()) || !pub.ID().Equal(k.ID()) {
		t.Fatal("DevicePublic round trip")
	}
	if _, err := (DeviceKeys{}).MarshalBinary(); !errors.Is(err, ident.ErrBadKey) {
		t.Fatalf("empty keys marshal: %v", err)
	}
}

func TestPrivateKeysNeverPrinted(t *testing.T) {
	k := fixedDeviceKeys(t, "print")
	secrets := []string{}
	for _, s := range [][]byte{k.Signing.Seed(), k.Messaging.Seed()} {
		secrets = append(secrets, hex.EncodeToString(s), ident.Base32(s), fmt.Sprint(s), string(s))
	}
	for _, v := range []any{k, &k, k.Signing, k.Messaging, &k.Signing, &k.Messaging, []DeviceKeys{k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Fatalf("Sprintf(%q, %T) prints a secret: %s", verb, v, out)
				}
			}
		}
	}
	if !strings.Contains(k.String(), k.ID().String()) {
		t.Fatalf("DeviceKeys.String should name the device: %s", k)
	}
}

func TestSignVerify(t *testing.T) {
	a := fixedDeviceKeys(t, "a")
	b := fixedDeviceKeys(t, "b")
	msg := []byte("hello")
	sig := a.Signing.Sign(ident.DomainLink, msg)
	if err := a.Signing.Public().Verify(ident.DomainLink, msg, sig); err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sig)
	tampered[10] ^= 1
	cases := []struct {
		name   string
		pub    ident.SigningPublic
		domain string
		msg    []byte
		sig    []byte
	}{
		{"wrong key", b.Signing.Public(), ident.DomainLink, msg, sig},
		{"wrong domain", a.Signing.Public(), ident.DomainRegProof, msg, sig},
		{"wrong message", a.Signing.Public(), ident.DomainLink, []byte("hellp"), sig},
		{"tampered signature", a.Signing.Public(), ident.DomainLink, msg, tampered},
		{"short signature", a.Signing.Public(), ident.DomainLink, msg, sig[:63]},
		{"no signature", a.Signing.Public(), ident.DomainLink, msg, nil},
	}
	for _, c := range cases {
		if err := c.pub.Verify(c.domain, c.msg, c.sig); !errors.Is(err, ident.ErrBadSignature) {
			t.Errorf("%s: got %v, want ErrBadSignature", c.name, err)
		}
	}
	// The domain separator is a NUL byte, so moving bytes between domain and
	// message does not carry a signature over.
	if err := a.Signing.Public().Verify("volo/v1/lin", []byte("k\x00hello"), sig); !errors.Is(err, ident.ErrBadSignature) {
		t.Errorf("domain/message boundary shift: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	k := fixedDeviceKeys(t, "parse")
	p, err := ident.ParseSigningPublic(k.Signing.Public().Bytes())
	if err != nil || !p.Equal(k.Signing.Public()) {
		t.Fatalf("signing public round trip: %v", err)
	}
	m, err := ident.ParseMessagingPublic(k.Messaging.Public().Bytes())
	if err != nil || !m.Equal(k.Messaging.Public()) {
		t.Fatalf("messaging public round trip: %v", err)
	}
	if len(k.Messaging.Public().Bytes()) != ident.MessagingPublicSize {
		t.Fatalf("messaging public size %d", len(k.Messaging.Public().Bytes()))
	}
	if k.Messaging.Public().HPKE().KEM().ID() != ident.MessagingKEMID || k.Messaging.HPKE().KEM().ID() != ident.MessagingKEMID {
		t.Fatal("wrong KEM")
	}
	for _, n := range []int{0, 31, 33} {
		if _, err := ident.ParseSigningPublic(make([]byte, n)); !errors.Is(err, ident.ErrBadKey) {
			t.Errorf("signing public of %d bytes: %v", n, err)
		}
		if _, err := SigningKeyFromSeed(make([]byte, n)); !errors.Is(err, ident.ErrBadKey) {
			t.Errorf("signing seed of %d bytes: %v", n, err)
		}
		if _, err := MessagingKeyFromSeed(make([]byte, n)); !errors.Is(err, ident.ErrBadKey) {
			t.Errorf("messaging seed of %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, ident.MessagingPublicSize - 1, ident.MessagingPublicSize + 1} {
		if _, err := ident.ParseMessagingPublic(make([]byte, n)); !errors.Is(err, ident.ErrBadKey) {
			t.Errorf("messaging public of %d bytes: %v", n, err)
		}
	}
}

func TestParseDeviceKeysRejects(t *testing.T) {
	k := fixedDeviceKeys(t, "rejects")
	good, _ := k.MarshalBinary()
	cases := map[string][]byte{
		"empty":         nil,
		"truncated":     good[:len(good)-1],
		"trailing byte": append(bytes.Clone(good), 0),
		"version 2":     marshalCBOR(deviceKeysWire{Version: 2, Signing: k.Signing.Seed(), Messaging: k.Messaging.Seed()}),
		"short seed":    marshalCBOR(deviceKeysWire{Version: 1, Signing: k.Signing.Seed()[:31], Messaging: k.Messaging.Seed()}),
		"no messaging":  marshalCBOR(deviceKeysWire{Version: 1, Signing: k.Signing.Seed()}),
		"unknown field": marshalCBOR(map[int][]byte{0: {1}, 1: k.Signing.Seed(), 2: k.Messaging.Seed(), 3: {}}),
	}
	for name, b := range cases {
		if _, err := ParseDeviceKeys(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Version 1 encoded in a non-minimal integer form is refused.
	nonMin := bytes.Replace(good, []byte{0x00, 0x01}, []byte{0x00, 0x18, 0x01}, 1)
	if _, err := ParseDeviceKeys(nonMin); !errors.Is(err, ident.ErrNonCanonical) {
		t.Errorf("non-minimal integer: %v", err)
	}
}

type keysVector struct {
	SigningSeed      string `json:"signing_seed"`
	MessagingSeed    string `json:"messaging_seed"`
	DeviceKeys       string `json:"device_keys_cbor"`
	SigningPublic    string `json:"signing_public"`
	MessagingPublic  string `json:"messaging_public"`
	DevicePublic     string `json:"device_public_cbor"`
	DeviceID         string `json:"device_id"`
	SignDomain       string `json:"sign_domain"`
	SignMessage      string `json:"sign_message"`
	Signature        string `json:"signature"`
	SigningPublicB32 string `json:"signing_public_string"`
}

func makeKeysVector(t *testing.T, label string) keysVector {
	k := fixedDeviceKeys(t, label)
	priv, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("volo test vector")
	return keysVector{
		SigningSeed:      hex.EncodeToString(k.Signing.Seed()),
		MessagingSeed:    hex.EncodeToString(k.Messaging.Seed()),
		DeviceKeys:       hex.EncodeToString(priv),
		SigningPublic:    hex.EncodeToString(k.Signing.Public().Bytes()),
		MessagingPublic:  hex.EncodeToString(k.Messaging.Public().Bytes()),
		DevicePublic:     hex.EncodeToString(k.Public().Encode()),
		DeviceID:         k.ID().String(),
		SignDomain:       ident.DomainLink,
		SignMessage:      hex.EncodeToString(msg),
		Signature:        hex.EncodeToString(k.Signing.Sign(ident.DomainLink, msg)),
		SigningPublicB32: k.Signing.Public().String(),
	}
}

func TestKeysVectors(t *testing.T) {
	got := []keysVector{makeKeysVector(t, "alice phone"), makeKeysVector(t, "alice laptop")}
	checkVectorFile(t, "keys_vectors.json", got)

	// Decode the committed bytes independently of generation.
	var vs []keysVector
	readVectorFile(t, "keys_vectors.json", &vs)
	for _, v := range vs {
		k, err := ParseDeviceKeys(mustHex(t, v.DeviceKeys))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.Signing.Seed(), mustHex(t, v.SigningSeed)) || !bytes.Equal(k.Messaging.Seed(), mustHex(t, v.MessagingSeed)) {
			t.Fatal("seeds differ")
		}
		re, _ := k.MarshalBinary()
		if hex.EncodeToString(re) != v.DeviceKeys {
			t.Fatal("device keys re-encoding differs")
		}
		pub, err := ident.DecodeDevicePublic(mustHex(t, v.DevicePublic))
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(pub.Encode()) != v.DevicePublic || !pub.Equal(k.Public()) {
			t.Fatal("device public re-encoding differs")
		}
		if hex.EncodeToString(pub.Messaging.Bytes()) != v.MessagingPublic || hex.EncodeToString(pub.Signing.Bytes()) != v.SigningPublic {
			t.Fatal("public keys differ")
		}
		id, err := ident.ParseDeviceID(v.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if !id.Equal(pub.ID()) {
			t.Fatalf("device ID %s, want %s", pub.ID(), id)
		}
		if err := pub.Signing.Verify(v.SignDomain, mustHex(t, v.SignMessage), mustHex(t, v.Signature)); err != nil {
			t.Fatal(err)
		}
	}
}
