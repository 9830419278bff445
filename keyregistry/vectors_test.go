package keyregistry

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

var update = flag.Bool("update", false, "rewrite testdata/record_vectors.json")

type recordVector struct {
	Comment string   `json:"comment"`
	UserID  string   `json:"user_id"`
	Version uint64   `json:"version"`
	Devices []string `json:"devices"`
	Key     string   `json:"key"`
	// The attestation: the registering node's peer ID (its Ed25519 key's
	// seed is 32 bytes of 0x30), the OIDC account (issuer, subject) and
	// its hash, and the encoded attestation (hex), key 3 of the record.
	Node        string `json:"node"`
	Issuer      string `json:"issuer"`
	Subject     string `json:"subject"`
	AccountHash string `json:"account_hash"`
	Attestation string `json:"attestation"`
	Record      string `json:"record"` // hex: the DHT value and the gossip message
}

// vectorNodeKey is the registering node's peer key of the vector.
func vectorNodeKey(t *testing.T) crypto.PrivKey {
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x30}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// vectorKeys derives device keys from a fixed seed byte.
func vectorKeys(t *testing.T, b byte) e2ee.DeviceKeys {
	sk, err := e2ee.SigningKeyFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := e2ee.MessagingKeyFromSeed(bytes.Repeat([]byte{b + 1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return e2ee.DeviceKeys{Signing: sk, Messaging: mk}
}

// vectorRecord is the committed example: a phone registers at a fixed
// time and adds a laptop a minute later.
func vectorRecord(t *testing.T) (Chain, recordVector) {
	phone, laptop := vectorKeys(t, 0x10), vectorKeys(t, 0x20)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g, err := e2ee.NewGenesis(phone, t0)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	req, err := e2ee.NewAddDeviceRequest(set.Head(), laptop)
	if err != nil {
		t.Fatal(err)
	}
	add, err := e2ee.NewAddDevice(set, phone, req, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if set, err = set.Apply(add); err != nil {
		t.Fatal(err)
	}
	acct := Account{Issuer: "https://accounts.example.com", Subject: "248289761001"}
	att, err := Attest(vectorNodeKey(t), set.User(), KindOIDC, AccountHash(set.User(), acct), t0)
	if err != nil {
		t.Fatal(err)
	}
	c := Chain{Set: set, Links: [][]byte{g.Encode(), add.Encode()}, Attestation: att}
	var devs []string
	for _, d := range set.DeviceIDs() {
		devs = append(devs, d.String())
	}
	return c, recordVector{
		Comment: "volo-user DHT record and /volo/registry/1 message: a phone's genesis, the add-device link of a laptop, and the OIDC attestation of the node that registered the phone",
		UserID:  set.User().String(), Version: set.Version(), Devices: devs,
		Key: RecordKey(set.User()), Node: att.Node.String(), Issuer: acct.Issuer, Subject: acct.Subject,
		AccountHash: hex.EncodeToString(att.Account), Attestation: hex.EncodeToString(att.Encode()),
		Record: hex.EncodeToString(c.Record().Encode()),
	}
}

func TestRecordVectors(t *testing.T) {
	path := filepath.Join("testdata", "record_vectors.json")
	_, want := vectorRecord(t)
	if *update {
		b, _ := json.MarshalIndent([]recordVector{want}, "", "  ")
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []recordVector
	if err := json.Unmarshal(data, &vs); err != nil || len(vs) != 1 {
		t.Fatalf("vectors: %v", err)
	}
	v := vs[0]
	if !reflect.DeepEqual(v, want) {
		t.Errorf("regenerated vector differs from the committed one: the format changed")
	}
	raw, _ := hex.DecodeString(v.Record)
	user, err := ident.ParseUserID(v.UserID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeRecord(raw, user)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Record().Encode(), raw) || c.Version() != v.Version || RecordKey(user) != v.Key {
		t.Error("committed record does not round-trip")
	}
	if c.Attestation.Node.String() != v.Node || c.Attestation.Kind != KindOIDC ||
		hex.EncodeToString(AccountHash(user, Account{Issuer: v.Issuer, Subject: v.Subject})) != v.AccountHash ||
		hex.EncodeToString(c.Attestation.Account) != v.AccountHash || hex.EncodeToString(c.Attestation.Encode()) != v.Attestation {
		t.Error("committed attestation does not match its node, account or encoding")
	}
	for i, d := range c.Set.DeviceIDs() {
		if d.String() != v.Devices[i] {
			t.Errorf("device %d: %s, want %s", i, d, v.Devices[i])
		}
	}
	if err := (Validator{}).Validate(v.Key, raw); err != nil {
		t.Error(err)
	}
	if _, err := (Validator{}).decodeAnnouncement(raw); err != nil {
		t.Error(err)
	}
}
