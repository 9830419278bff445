package keyregistry

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// fuzzSeeds are valid records (one, two and three links) and near misses.
func fuzzSeeds(f *testing.F) [][]byte {
	k := []e2ee.DeviceKeys{mustKeys(f), mustKeys(f), mustKeys(f)}
	full := testChain(f, k...)
	user := full.Set.User()
	var seeds [][]byte
	for n := 1; n <= 3; n++ {
		seeds = append(seeds, Record{User: user, Links: full.Links[:n], Attestation: full.Record().Attestation}.Encode())
	}
	seeds = append(seeds, Record{User: user}.Encode(), []byte{0xa0}, []byte{0xa1, 0x01, 0x40}, nil)
	return seeds
}

func mustKeys(f *testing.F) e2ee.DeviceKeys {
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	return k
}

// FuzzDecodeRecord: the DHT value decoder and the validator never panic,
// and whatever they accept is canonical, verifies, and is selected.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeRecord(data, ident.UserID{})
		if err != nil {
			return
		}
		if !bytes.Equal(c.Record().Encode(), data) {
			t.Fatal("accepted record does not re-encode to its input")
		}
		key := RecordKey(c.Set.User())
		if err := (Validator{}).Validate(key, data); err != nil {
			t.Fatalf("decoded but the validator refuses: %v", err)
		}
		if i, err := (Validator{}).Select(key, [][]byte{[]byte("x"), data}); err != nil || i != 1 {
			t.Fatalf("Select = %d, %v", i, err)
		}
		if _, _, err := ident.DecodeChain(c.Set.User(), c.Links); err != nil {
			t.Fatalf("accepted chain does not verify: %v", err)
		}
	})
}

// FuzzGossipMessage: the topic validator's decoder never panics and only
// lets verified chains through.
func FuzzGossipMessage(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := (Validator{}).decodeAnnouncement(data)
		if err != nil {
			return
		}
		if c.Version() != uint64(len(c.Links)) || c.Set.Len() == 0 {
			t.Fatalf("accepted chain: version %d, %d links, %d devices", c.Version(), len(c.Links), c.Set.Len())
		}
		if _, err := DecodeRecord(data, c.Set.User()); err != nil {
			t.Fatalf("announcement accepted, record refused: %v", err)
		}
	})
}

// FuzzAppendLink: the link decoder of POST /v1/users/{id}/links never
// panics, and a refused link leaves the stored chain as it was.
func FuzzAppendLink(f *testing.F) {
	s, _ := newTestService(f, DefaultConfig())
	phone, laptop := mustKeys(f), mustKeys(f)
	g, _ := e2ee.NewGenesis(phone, time.Now())
	n, _, _ := s.Nonce("fuzz")
	c, err := s.Register(f.Context(), g.Encode(), e2ee.SignRegistration(phone, n).Encode(), "")
	if err != nil {
		f.Fatal(err)
	}
	user := c.Set.User()
	req, _ := e2ee.NewAddDeviceRequest(c.Set.Head(), laptop)
	add, _ := e2ee.NewAddDevice(c.Set, phone, req, time.Now())
	f.Add(add.Encode())
	f.Add(g.Encode())
	f.Add([]byte{0xa0})
	// The valid seed would change the chain: every run starts from
	// version 1, so an accepted link must be exactly the seed.
	f.Fuzz(func(t *testing.T, link []byte) {
		got, err := s.AppendLink(t.Context(), user, link)
		cur, lerr := s.local(t.Context(), user)
		if lerr != nil {
			t.Fatal(lerr)
		}
		if err != nil {
			if cur.Version() != 1 {
				t.Fatalf("refused link changed the chain to version %d", cur.Version())
			}
			return
		}
		if got.Version() != 2 || !bytes.Equal(link, add.Encode()) {
			t.Fatalf("accepted a link other than the signed one (version %d)", got.Version())
		}
		// Put the chain back to version 1 for the next input.
		if err := s.save(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeAttestation: the attestation decoder never panics, and what
// it accepts is canonical, well formed and signed by the peer it names.
func FuzzDecodeAttestation(f *testing.F) {
	key := testNodeKey(f)
	user := testChain(f, mustKeys(f)).Set.User()
	for _, kind := range []AttestationKind{KindOIDC, KindDevelopment} {
		a := testAttestation(f, key, user, kind)
		f.Add(a.Encode())
		bad := a.Encode()
		bad[len(bad)-1] ^= 1
		f.Add(bad)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa2, 0x01, 0xa0, 0x02, 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAttestation(data)
		if err != nil {
			return
		}
		if !bytes.Equal(a.Encode(), data) {
			t.Fatal("accepted attestation does not re-encode to its input")
		}
		if err := a.checkStatement(); err != nil {
			t.Fatalf("accepted a malformed statement: %v", err)
		}
		if err := a.verify(); err != nil {
			t.Fatalf("accepted a bad signature: %v", err)
		}
	})
}
