package keyregistry

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

func TestAttestationRoundTrip(t *testing.T) {
	key := testNodeKey(t)
	user := testChain(t, testKeys(t)).Set.User()
	for _, kind := range []AttestationKind{KindOIDC, KindDevelopment} {
		a := testAttestation(t, key, user, kind)
		got, err := DecodeAttestation(a.Encode())
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if id, _ := peer.IDFromPrivateKey(key); got.Node != id || got.Kind != kind || !got.User.Equal(user) ||
			!bytes.Equal(got.Encode(), a.Encode()) || !got.Time.Equal(a.Time) {
			t.Fatalf("%s: round trip changed the attestation: %+v", kind, got)
		}
	}
	// The account hash hides the account and depends on the user.
	other := testChain(t, testKeys(t)).Set.User()
	if bytes.Equal(AccountHash(user, testAccount), AccountHash(other, testAccount)) {
		t.Error("the account hash is the same for two users")
	}
	if bytes.Contains(AccountHash(user, testAccount), []byte(testAccount.Subject)) {
		t.Error("the account hash contains the subject")
	}
}

func TestAttestationRefusals(t *testing.T) {
	key := testNodeKey(t)
	user := testChain(t, testKeys(t)).Set.User()
	good := testAttestation(t, key, user, KindOIDC)
	resign := func(a Attestation) []byte {
		var err error
		if a.Signature, err = key.Sign(ident.DomainMessage(DomainAttest, a.signedBytes())); err != nil {
			t.Fatal(err)
		}
		return a.Encode()
	}
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpID, _ := peer.IDFromPrivateKey(secp)
	secpAtt := good
	secpAtt.Node = secpID
	if secpAtt.Signature, err = secp.Sign(ident.DomainMessage(DomainAttest, secpAtt.signedBytes())); err != nil {
		t.Fatal(err)
	}
	mallory := testNodeKey(t)
	forged := good
	forged.Signature = testAttestation(t, mallory, user, KindOIDC).Signature
	tampered := good.Encode()
	tampered[len(tampered)-1] ^= 1
	devWithAccount, oidcNoAccount, unknownKind := good, good, good
	devWithAccount.Kind = KindDevelopment
	oidcNoAccount.Account = nil
	unknownKind.Kind = 3
	for name, data := range map[string][]byte{
		"empty":                    nil,
		"garbage":                  []byte("not cbor"),
		"signed by another key":    forged.Encode(),
		"tampered signature":       tampered,
		"secp256k1 peer key":       secpAtt.Encode(),
		"development with account": resign(devWithAccount),
		"oidc without account":     resign(oidcNoAccount),
		"unknown kind":             resign(unknownKind),
		"trailing byte":            append(good.Encode(), 0),
		"over the size limit":      make([]byte, MaxAttestationSize+1),
	} {
		if _, err := DecodeAttestation(data); !errors.Is(err, ErrBadAttestation) {
			t.Errorf("%s: err = %v, want ErrBadAttestation", name, err)
		}
	}
}

// A development attestation is a valid record, accepted only by a node
// that allows development users.
func TestValidatorDevelopmentPolicy(t *testing.T) {
	c := testChain(t, testKeys(t))
	c.Attestation = testAttestation(t, testNodeKey(t), c.Set.User(), KindDevelopment)
	rec, key := c.Record().Encode(), RecordKey(c.Set.User())
	if _, err := DecodeRecord(rec, c.Set.User()); err != nil {
		t.Fatalf("a development record does not decode: %v", err)
	}
	if err := (Validator{}).Validate(key, rec); !errors.Is(err, ErrDevelopmentUser) {
		t.Errorf("strict validator: err = %v, want ErrDevelopmentUser", err)
	}
	if _, err := (Validator{}).Select(key, [][]byte{rec}); err == nil {
		t.Error("strict validator selects a development record")
	}
	if _, err := (Validator{}).decodeAnnouncement(rec); !errors.Is(err, ErrDevelopmentUser) {
		t.Errorf("strict gossip validator: err = %v, want ErrDevelopmentUser", err)
	}
	if err := (Validator{AllowDevelopment: true}).Validate(key, rec); err != nil {
		t.Errorf("development validator refuses it: %v", err)
	}
	// Control: an OIDC attestation passes the strict validator.
	oidc := testChain(t, testKeys(t))
	if err := (Validator{}).Validate(RecordKey(oidc.Set.User()), oidc.Record().Encode()); err != nil {
		t.Errorf("strict validator refuses an OIDC record: %v", err)
	}
}

// The budget of new users per attesting node refills with time: a burst
// of perWindow, then one per window/perWindow. Users already counted, or
// held in the store, are not counted again; another attesting node has a
// budget of its own.
func TestNewUserBudgetRefills(t *testing.T) {
	const perWindow = 3
	nodeA, nodeB := testNodeKey(t), testNodeKey(t)
	held := testChain(t, testKeys(t))
	held.Attestation = testAttestation(t, nodeA, held.Set.User(), KindOIDC)
	record := func(key crypto.PrivKey) (string, []byte) {
		c := testChain(t, testKeys(t))
		c.Attestation = testAttestation(t, key, c.Set.User(), KindOIDC)
		return RecordKey(c.Set.User()), c.Record().Encode()
	}
	synctest.Test(t, func(t *testing.T) {
		refused := 0
		known := func(u ident.UserID) bool { return u.Equal(held.Set.User()) }
		v := Validator{budget: newNewUsers(perWindow, time.Hour, known, slog.New(slog.DiscardHandler), func() { refused++ })}
		accept := func(key string, rec []byte) error { return v.Validate(key, rec) }

		var first []string
		var firstRec [][]byte
		for i := range perWindow {
			k, r := record(nodeA)
			if err := accept(k, r); err != nil {
				t.Fatalf("user %d of the burst: %v", i, err)
			}
			first, firstRec = append(first, k), append(firstRec, r)
		}
		k, r := record(nodeA)
		if err := accept(k, r); !errors.Is(err, ErrAttestBudget) {
			t.Fatalf("user over the burst: err = %v, want ErrAttestBudget", err)
		}
		// Counted users, held users and other nodes' users still pass.
		if err := accept(first[0], firstRec[0]); err != nil {
			t.Errorf("a counted user seen again: %v", err)
		}
		if err := accept(RecordKey(held.Set.User()), held.Record().Encode()); err != nil {
			t.Errorf("a held user: %v", err)
		}
		if kb, rb := record(nodeB); accept(kb, rb) != nil {
			t.Error("another attesting node's user is refused")
		}
		// Select never counts.
		if _, err := v.Select(k, [][]byte{r}); err != nil {
			t.Errorf("Select counts against the budget: %v", err)
		}

		// One user refills in window/perWindow.
		time.Sleep(time.Hour/perWindow - time.Second)
		if err := accept(k, r); !errors.Is(err, ErrAttestBudget) {
			t.Fatalf("before a refill: err = %v, want ErrAttestBudget", err)
		}
		time.Sleep(time.Second)
		if err := accept(k, r); err != nil {
			t.Fatalf("after one refill: %v", err)
		}
		if k2, r2 := record(nodeA); !errors.Is(accept(k2, r2), ErrAttestBudget) {
			t.Fatal("two users after one refill")
		}
		// A full window refills the whole burst, and no more.
		time.Sleep(2 * time.Hour)
		for i := range perWindow {
			if k, r := record(nodeA); accept(k, r) != nil {
				t.Fatalf("user %d after a full refill refused", i)
			}
		}
		if k, r := record(nodeA); !errors.Is(accept(k, r), ErrAttestBudget) {
			t.Fatal("the bucket holds more than its burst")
		}
		if refused != 4 {
			t.Errorf("refusals counted: %d, want 4", refused)
		}
	})
}
