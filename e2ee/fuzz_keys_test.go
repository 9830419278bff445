package e2ee

import (
	"bytes"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func FuzzParseDeviceID(f *testing.F) {
	f.Add(fixedDeviceKeys(f, "a").ID().String())
	f.Add("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ident.ParseDeviceID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("parsed %q prints as %q", s, id)
		}
		b, err := id.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		var back ident.DeviceID
		if err := back.UnmarshalCBOR(b); err != nil || !back.Equal(id) {
			t.Fatalf("CBOR round trip: %v", err)
		}
	})
}

func FuzzParseUserID(f *testing.F) {
	g, err := NewGenesis(fixedDeviceKeys(f, "a"), testTime(0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(g.UserID().String())
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ident.ParseUserID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("parsed %q prints as %q", s, id)
		}
		back, err := ident.UserIDFromBytes(id.Bytes())
		if err != nil || !back.Equal(id) {
			t.Fatalf("bytes round trip: %v", err)
		}
	})
}

func FuzzParseDeviceKeys(f *testing.F) {
	b, err := fixedDeviceKeys(f, "a").MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseDeviceKeys(data)
		if err != nil {
			return
		}
		out, err := k.MarshalBinary()
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("re-encodes differently: %v", err)
		}
	})
}

func FuzzDecodeDevicePublic(f *testing.F) {
	f.Add(fixedDeviceKeys(f, "a").Public().Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ident.DecodeDevicePublic(data)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Encode(), data) {
			t.Fatal("re-encodes differently")
		}
	})
}

func FuzzDecodeRegistrationProof(f *testing.F) {
	k := fixedDeviceKeys(f, "a")
	nonce := bytes.Repeat([]byte{7}, 32)
	f.Add(SignRegistration(k, nonce).Encode())
	f.Add(SignRegistration(k, nonce[:16]).Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ident.DecodeRegistrationProof(data)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Encode(), data) {
			t.Fatal("re-encodes differently")
		}
		if _, err := ident.VerifyRegistration(p, p.Nonce); err == nil && !p.ID.Equal(p.Device.ID()) {
			t.Fatal("verified a proof whose ID does not match its keys")
		}
	})
}
