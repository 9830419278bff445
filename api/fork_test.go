package api_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/node"
)

// TestUserReportsAKnownFork: a user registered with a recovery key adds a
// laptop, which is stolen; the owner revokes it through the API while the
// thief announces, on gossip, a branch revoking the phone, padded with 20
// devices. GET /v1/users/{id} serves the owner's chain and reports the
// fork with both heads; a user without a fork has no "fork" field.
func TestUserReportsAKnownFork(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	url := nw.Nodes[0].APIURL()
	phone, laptop := newKeys(t), newKeys(t)
	rk, err := e2ee.GenerateRecoveryKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var n api.NonceResponse
	if st, code := call(t, "POST", url+"/v1/auth/nonce", nil, &n); st != 200 {
		t.Fatalf("nonce: %d %s", st, code)
	}
	now := time.Now()
	g, err := e2ee.NewGenesisWithRecovery(phone, rk.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	reg := api.RegisterRequest{Genesis: g.Encode(), Proof: e2ee.SignRegistration(phone, n.Nonce).Encode()}
	if st, code := call(t, "POST", url+"/v1/users", reg, nil); st != 201 {
		t.Fatalf("register: %d %s", st, code)
	}
	user := g.UserID()
	set, _ := ident.VerifyChain(user, []ident.Link{g})
	req, _ := e2ee.NewAddDeviceRequest(set.Head(), laptop)
	add, err := e2ee.NewAddDevice(set, phone, req, now)
	if err != nil {
		t.Fatal(err)
	}
	if st, code := call(t, "POST", url+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: add.Encode()}, nil); st != 200 {
		t.Fatalf("add laptop: %d %s", st, code)
	}
	set, _ = set.Apply(add)
	base := [][]byte{g.Encode(), add.Encode()}

	// The thief's branch, padded.
	theft, err := e2ee.NewRevokeDevice(set, laptop, phone.ID(), now)
	if err != nil {
		t.Fatal(err)
	}
	thief, _ := set.Apply(theft)
	thiefLinks := append(slices.Clone(base), theft.Encode())
	for i := range 20 {
		req, _ := e2ee.NewAddDeviceRequest(thief.Head(), newKeys(t))
		l, err := e2ee.NewAddDevice(thief, laptop, req, now)
		if err != nil {
			t.Fatal(err)
		}
		if thief, err = thief.Apply(l); err != nil {
			t.Fatalf("pad %d: %v", i, err)
		}
		thiefLinks = append(thiefLinks, l.Encode())
	}
	// The owner's revocation; with no anchor and no recovery link the
	// smaller divergent link ID wins: make it the owner's, as it is for
	// half of all forks.
	var revoke ident.Link
	for at := now; ; at = at.Add(time.Millisecond) {
		if revoke, err = e2ee.NewRevokeDevice(set, phone, laptop.ID(), at); err != nil {
			t.Fatal(err)
		}
		if bytes.Compare(revoke.ID().Bytes(), theft.ID().Bytes()) < 0 {
			break
		}
	}
	if st, code := call(t, "POST", url+"/v1/users/"+user.String()+"/links", api.AppendLinkRequest{Link: revoke.Encode()}, nil); st != 200 {
		t.Fatalf("revoke laptop: %d %s", st, code)
	}
	legit, _ := set.Apply(revoke)
	var u api.UserResponse
	if call(t, "GET", url+"/v1/users/"+user.String(), nil, &u); u.Fork != nil {
		t.Fatalf("fork reported before any: %+v", u.Fork)
	}

	// The attestation is public (it is in every copy of the record): the
	// thief's branch carries the genuine one.
	held, err := nw.Nodes[0].KeyRegistry().Stored(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	thiefRecord := keyregistry.Record{User: user, Links: thiefLinks, Attestation: held.Record().Attestation}.Encode()
	if err := rawGossip(t, nw).Publish(t.Context(), thiefRecord); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, time.Minute, func() error {
		u = api.UserResponse{}
		if st, code := call(t, "GET", url+"/v1/users/"+user.String(), nil, &u); st != 200 {
			return fmt.Errorf("lookup: %d %s", st, code)
		}
		if u.Fork == nil {
			return fmt.Errorf("no fork reported")
		}
		return nil
	})
	got, _, err := ident.DecodeChain(user, u.Links)
	if err != nil || got.Head() != legit.Head() {
		t.Fatalf("serves version %d, want the owner's %d: %v", got.Version(), legit.Version(), err)
	}
	f := u.Fork
	if f.At != 3 || f.Rule != "smaller-link-id" ||
		f.Kept.Version != 3 || f.Kept.Link != legit.Head().Link.String() ||
		f.Other.Version != thief.Version() || f.Other.Link != thief.Head().Link.String() {
		t.Fatalf("fork %+v", f)
	}
}
