package keyregistry

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

func TestRecordRoundTrip(t *testing.T) {
	c := testChain(t, testKeys(t), testKeys(t), testKeys(t))
	enc := c.Record().Encode()
	got, err := DecodeRecord(enc, c.Set.User())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version() != 3 || !bytes.Equal(got.Record().Encode(), enc) {
		t.Fatalf("decoded version %d", got.Version())
	}
	if err := (Validator{}).Validate(RecordKey(c.Set.User()), enc); err != nil {
		t.Fatal(err)
	}
}

func TestRecordRefusals(t *testing.T) {
	alice := testChain(t, testKeys(t), testKeys(t))
	bob := testChain(t, testKeys(t))
	user := alice.Set.User()
	enc := alice.Record().Encode()
	// A non-canonical encoding of the same record: map keys in the wrong
	// order.
	reordered := append([]byte{0xa2, 0x02}, mustMarshal(t, alice.Links)...)
	reordered = append(reordered, 0x01)
	reordered = append(reordered, mustMarshal(t, user)...)
	// A byte of the last link's signature (key 3, the attestation, comes
	// after the links).
	unattested := Record{User: user, Links: alice.Links}.Encode()
	tampered := bytes.Clone(enc)
	tampered[len(unattested)-5] ^= 1
	// An attestation naming one node, signed by another.
	forged := alice.Attestation
	forged.Signature = testAttestation(t, testNodeKey(t), user, KindOIDC).Signature
	// An attestation whose own signature is tampered with.
	badSig := bytes.Clone(enc)
	badSig[len(badSig)-5] ^= 1
	cases := []struct {
		name string
		data []byte
		user ident.UserID
		want error
	}{
		{"empty", nil, user, ErrBadRecord},
		{"garbage", []byte("not cbor"), user, ErrBadRecord},
		{"no links", Record{User: user}.Encode(), user, ErrBadRecord},
		{"other user's record", bob.Record().Encode(), user, ErrBadRecord},
		{"other user's links under this ID", Record{User: user, Links: bob.Links, Attestation: alice.Record().Attestation}.Encode(), user, ident.ErrUserIDMismatch},
		{"tampered signature", tampered, user, ErrBadRecord},
		{"no attestation", unattested, user, ErrUnattested},
		{"other user's attestation", Record{User: user, Links: alice.Links, Attestation: bob.Record().Attestation}.Encode(), user, ErrBadAttestation},
		{"forged attestation", Record{User: user, Links: alice.Links, Attestation: forged.Encode()}.Encode(), user, ErrBadAttestation},
		{"tampered attestation", badSig, user, ErrBadAttestation},
		{"non-canonical", reordered, user, ErrBadRecord},
		{"trailing bytes", append(bytes.Clone(enc), 0), user, ErrBadRecord},
		{"over the size limit", make([]byte, MaxRecordSize+1), user, ErrRecordTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeRecord(c.data, c.user)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err := (Validator{}).Validate(RecordKey(c.user), c.data); err == nil {
				t.Fatal("validator accepts it")
			}
		})
	}
	for _, key := range []string{"/volo-user/x", "/volo-name/" + user.String(), "/volo-user/" + user.String() + "/x", "volo-user"} {
		if err := (Validator{}).Validate(key, enc); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}

func mustLinkID(t *testing.T, enc []byte) []byte {
	l, err := ident.DecodeLink(enc)
	if err != nil {
		t.Fatal(err)
	}
	return l.ID().Bytes()
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := recEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSelectNewestValidChain(t *testing.T) {
	k := []e2ee.DeviceKeys{testKeys(t), testKeys(t), testKeys(t)}
	full := testChain(t, k...)
	user := full.Set.User()
	v1 := Record{User: user, Links: full.Links[:1], Attestation: full.Record().Attestation}.Encode()
	v2 := Record{User: user, Links: full.Links[:2], Attestation: full.Record().Attestation}.Encode()
	v3 := full.Record().Encode()
	forged := bytes.Clone(v3)
	forged[len(forged)-3] ^= 1
	// A fork at version 2: the genesis device adds another device instead.
	set1, _, _ := ident.DecodeChain(user, full.Links[:1])
	other := testKeys(t)
	req, _ := e2ee.NewAddDeviceRequest(set1.Head(), other)
	alt, err := e2ee.NewAddDevice(set1, k[0], req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fork := Record{User: user, Links: [][]byte{full.Links[0], alt.Encode()}, Attestation: full.Record().Attestation}.Encode()
	// Of two forked chains with no recovery link and no anchor, the one
	// whose divergent link ID is smaller wins, whatever the order they come
	// in and whatever their lengths.
	forkWins := bytes.Compare(alt.ID().Bytes(), mustLinkID(t, full.Links[1])) < 0
	sel := Validator{}
	key := RecordKey(user)
	for _, c := range []struct {
		name   string
		values [][]byte
		want   int
	}{
		{"newest last", [][]byte{v1, v2, v3}, 2},
		{"newest first", [][]byte{v3, v1, v2}, 0},
		{"forged longer one is skipped", [][]byte{v2, forged}, 0},
		{"invalid first", [][]byte{[]byte("x"), v1}, 1},
		{"fork, ours first", [][]byte{v2, fork}, map[bool]int{true: 1, false: 0}[forkWins]},
		{"fork, theirs first", [][]byte{fork, v2}, map[bool]int{true: 0, false: 1}[forkWins]},
		{"a longer branch does not beat a fork by length", [][]byte{fork, v3}, map[bool]int{true: 0, false: 1}[forkWins]},
	} {
		got, err := sel.Select(key, c.values)
		if err != nil || got != c.want {
			t.Errorf("%s: Select = %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	if _, err := sel.Select(key, [][]byte{forged, []byte("x")}); err == nil {
		t.Error("Select chose among invalid values only")
	}
}
