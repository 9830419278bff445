package e2ee

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func TestRegistrationRoundTrip(t *testing.T) {
	k := fixedDeviceKeys(t, "alice phone")
	nonce := bytes.Repeat([]byte{7}, 32)
	p, err := ident.DecodeRegistrationProof(SignRegistration(k, nonce).Encode())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ident.VerifyRegistration(p, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(k.Public()) || !p.ID.Equal(k.ID()) {
		t.Fatal("wrong device")
	}
}

func TestRegistrationFailures(t *testing.T) {
	k := fixedDeviceKeys(t, "alice phone")
	other := fixedDeviceKeys(t, "mallory")
	nonce := bytes.Repeat([]byte{7}, 32)
	good := SignRegistration(k, nonce)

	if _, err := ident.VerifyRegistration(good, bytes.Repeat([]byte{8}, 32)); !errors.Is(err, ident.ErrNonceMismatch) {
		t.Errorf("wrong nonce: %v", err)
	}
	swapped := good
	swapped.Device = other.Public()
	if _, err := ident.VerifyRegistration(swapped, nonce); !errors.Is(err, ident.ErrDeviceIDMismatch) {
		t.Errorf("keys swapped: %v", err)
	}
	swapped.ID = other.ID()
	if _, err := ident.VerifyRegistration(swapped, nonce); !errors.Is(err, ident.ErrBadSignature) {
		t.Errorf("keys and ID swapped: %v", err)
	}
	// Keys of one device, signed by another.
	forged := SignRegistration(other, nonce)
	forged.Device, forged.ID = k.Public(), k.ID()
	if _, err := ident.VerifyRegistration(forged, nonce); !errors.Is(err, ident.ErrBadSignature) {
		t.Errorf("signed by another key: %v", err)
	}
	// A link signature is not a registration signature.
	linkSig := good
	linkSig.Sig = k.Signing.Sign(ident.DomainLink, good.SignedBytes())
	if _, err := ident.VerifyRegistration(linkSig, nonce); !errors.Is(err, ident.ErrBadSignature) {
		t.Errorf("signature of another domain: %v", err)
	}
	if _, err := ident.VerifyRegistration(SignRegistration(k, nonce[:8]), nonce[:8]); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("short nonce: %v", err)
	}
	if _, err := ident.DecodeRegistrationProof(SignRegistration(k, nonce[:8]).Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("decode short nonce: %v", err)
	}
	// Every tampered byte is caught by decoding or verification.
	enc := good.Encode()
	for pos := range enc {
		mod := bytes.Clone(enc)
		mod[pos] ^= 0x01
		p, err := ident.DecodeRegistrationProof(mod)
		if err == nil {
			_, err = ident.VerifyRegistration(p, nonce)
		}
		if err == nil {
			t.Fatalf("tampered byte %d accepted", pos)
		}
	}
}

type regProofVector struct {
	DeviceKeys string `json:"device_keys_cbor"`
	Nonce      string `json:"nonce"`
	Proof      string `json:"proof_cbor"`
	DeviceID   string `json:"device_id"`
}

func TestRegistrationVectors(t *testing.T) {
	k := fixedDeviceKeys(t, "alice phone")
	kb, _ := k.MarshalBinary()
	nonce := []byte("volo registration nonce 0001")
	checkVectorFile(t, "regproof_vectors.json", regProofVector{
		DeviceKeys: hex.EncodeToString(kb),
		Nonce:      hex.EncodeToString(nonce),
		Proof:      hex.EncodeToString(SignRegistration(k, nonce).Encode()),
		DeviceID:   k.ID().String(),
	})

	var v regProofVector
	readVectorFile(t, "regproof_vectors.json", &v)
	p, err := ident.DecodeRegistrationProof(mustHex(t, v.Proof))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(p.Encode()) != v.Proof {
		t.Fatal("re-encoding differs")
	}
	pub, err := ident.VerifyRegistration(p, mustHex(t, v.Nonce))
	if err != nil {
		t.Fatal(err)
	}
	if pub.ID().String() != v.DeviceID {
		t.Fatal("device ID differs")
	}
}

func BenchmarkSignRegistration(b *testing.B) {
	k := fixedDeviceKeys(b, "bench")
	nonce := bytes.Repeat([]byte{7}, 32)
	for b.Loop() {
		_ = SignRegistration(k, nonce).Encode()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proofs/s")
}

// BenchmarkVerifyRegistration measures the node's side: decode and verify.
func BenchmarkVerifyRegistration(b *testing.B) {
	k := fixedDeviceKeys(b, "bench")
	nonce := bytes.Repeat([]byte{7}, 32)
	enc := SignRegistration(k, nonce).Encode()
	for b.Loop() {
		p, err := ident.DecodeRegistrationProof(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ident.VerifyRegistration(p, nonce); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proofs/s")
}

func TestRegistrationGenesis(t *testing.T) {
	k := fixedDeviceKeys(t, "alice phone")
	nonce := bytes.Repeat([]byte{7}, 32)
	g, _ := NewGenesis(k, testTime(0))
	set, err := ident.VerifyRegistrationGenesis(SignRegistration(k, nonce), nonce, g)
	if err != nil {
		t.Fatal(err)
	}
	if !set.User().Equal(g.UserID()) || set.Len() != 1 {
		t.Fatal("wrong set")
	}
	other, _ := NewGenesis(fixedDeviceKeys(t, "mallory"), testTime(0))
	if _, err := ident.VerifyRegistrationGenesis(SignRegistration(k, nonce), nonce, other); !errors.Is(err, ident.ErrDeviceIDMismatch) {
		t.Fatalf("genesis of another device: %v", err)
	}
	bad := g
	bad.Sig = bytes.Clone(g.Sig)
	bad.Sig[0] ^= 1
	if _, err := ident.VerifyRegistrationGenesis(SignRegistration(k, nonce), nonce, bad); !errors.Is(err, ident.ErrBadSignature) {
		t.Fatalf("bad genesis signature: %v", err)
	}
	if _, err := ident.VerifyRegistrationGenesis(SignRegistration(k, nonce), nonce[1:], g); !errors.Is(err, ident.ErrNonceMismatch) {
		t.Fatalf("wrong nonce: %v", err)
	}
}
