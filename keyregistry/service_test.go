package keyregistry

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/service"
	"github.com/volo-chat/volo/store"
)

func register(t *testing.T, s *Service, keys e2ee.DeviceKeys, ticket string) (Chain, error) {
	t.Helper()
	n, _, err := s.Nonce("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := e2ee.NewGenesis(keys, time.Now())
	return s.Register(t.Context(), g.Encode(), e2ee.SignRegistration(keys, n).Encode(), ticket)
}

func TestRegisterAndAppend(t *testing.T) {
	s, _ := newTestService(t, DefaultConfig())
	phone, laptop := testKeys(t), testKeys(t)
	c, err := register(t, s, phone, "")
	if err != nil {
		t.Fatal(err)
	}
	user := c.Set.User()
	// Open registration: a development attestation by this node, kept in
	// the store with the chain.
	if a := c.Attestation; a.Kind != KindDevelopment || a.Node != s.net.Host.ID() || len(a.Account) != 0 {
		t.Fatalf("attestation %+v, want development by %s", a, s.net.Host.ID())
	}
	if stored, err := s.local(t.Context(), user); err != nil || !bytes.Equal(stored.Attestation.Encode(), c.Attestation.Encode()) {
		t.Fatalf("stored chain: %v, attestation %+v", err, stored.Attestation)
	}
	n, _, _ := s.Nonce("127.0.0.1")
	if _, err := s.Register(t.Context(), c.Links[0], e2ee.SignRegistration(phone, n).Encode(), ""); !errors.Is(err, ErrAlreadyRegistered) {
		t.Fatalf("same genesis twice: %v", err)
	}

	other := testKeys(t)
	g, _ := e2ee.NewGenesis(other, time.Now())
	gPhone, _ := e2ee.NewGenesis(testKeys(t), time.Now())
	fresh := func() []byte { n, _, _ := s.Nonce("127.0.0.1"); return n }
	for _, bad := range []struct {
		name           string
		genesis, proof []byte
		want           error
	}{
		{"proof garbage", g.Encode(), []byte{0xa0}, ErrInvalidProof},
		{"proof by another device", g.Encode(), e2ee.SignRegistration(testKeys(t), fresh()).Encode(), ErrInvalidProof},
		{"genesis garbage", []byte("x"), e2ee.SignRegistration(other, fresh()).Encode(), ErrInvalidLink},
		{"genesis of another device", gPhone.Encode(), e2ee.SignRegistration(other, fresh()).Encode(), ErrInvalidProof},
		{"nonce never issued", g.Encode(), e2ee.SignRegistration(other, make([]byte, NonceSize)).Encode(), ErrBadNonce},
	} {
		t.Run(bad.name, func(t *testing.T) {
			if _, err := s.Register(t.Context(), bad.genesis, bad.proof, ""); !errors.Is(err, bad.want) {
				t.Fatalf("err = %v, want %v", err, bad.want)
			}
		})
	}
	if _, err := s.local(t.Context(), g.UserID()); !errors.Is(err, ErrUserNotFound) {
		t.Fatalf("refused user stored: %v", err)
	}

	req, _ := e2ee.NewAddDeviceRequest(c.Set.Head(), laptop)
	add, _ := e2ee.NewAddDevice(c.Set, phone, req, time.Now())
	c2, err := s.AppendLink(t.Context(), user, add.Encode())
	if err != nil || c2.Version() != 2 || !bytes.Equal(c2.Record().Attestation, c.Record().Attestation) {
		t.Fatalf("append: %v", err)
	}
	if _, err := s.AppendLink(t.Context(), user, add.Encode()); !errors.Is(err, ErrStaleChain) {
		t.Fatalf("same link again: %v", err)
	}
	if _, err := s.AppendLink(t.Context(), user, []byte("garbage")); !errors.Is(err, ErrInvalidLink) {
		t.Fatalf("garbage link: %v", err)
	}
	// A revoke of a device that is not in the chain, well placed.
	rev, _ := e2ee.NewRevokeDevice(c2.Set, laptop, phone.ID(), time.Now())
	rev.Revoked = other.ID()
	rev.Sig = nil
	rev.Sig = laptop.Signing.Sign(ident.DomainLink, rev.Encode())
	if _, err := s.AppendLink(t.Context(), user, rev.Encode()); !errors.Is(err, ErrInvalidLink) {
		t.Fatalf("revoke of an unknown device: %v", err)
	}
	got, err := s.Lookup(t.Context(), user)
	if err != nil || got.Version() != 2 {
		t.Fatalf("lookup: version %d, %v", got.Version(), err)
	}
	if _, err := s.AppendLink(t.Context(), g.UserID(), add.Encode()); !errors.Is(err, ErrUserNotFound) {
		t.Fatalf("link for an unknown user: %v", err)
	}

	// Every accepted link went to the anchor queue, in order.
	q := s.anchors.(*StoreQueue)
	items, err := q.Next(10)
	if err != nil || len(items) != 2 {
		t.Fatalf("queue: %d items, %v", len(items), err)
	}
	if !items[0].User.Equal(user) || items[0].Seq != 1 || items[1].Seq != 2 || string(items[1].Link) != string(add.Encode()) {
		t.Fatalf("queue holds %+v", items)
	}
}

func TestRegisterWithTicket(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OpenRegistration = false
	s, _ := newTestService(t, cfg)
	if _, err := register(t, s, testKeys(t), ""); !errors.Is(err, ErrBadTicket) {
		t.Fatalf("no ticket: %v", err)
	}
	acct := Account{Issuer: "https://issuer.example", Subject: "bob"}
	ticket := func() string {
		id := "login-" + randomToken()[:20]
		if err := s.logins.complete(id, acct); err != nil {
			t.Fatal(err)
		}
		tk, _, ok, _ := s.logins.poll(t.Context(), id)
		if !ok {
			t.Fatal("no ticket")
		}
		return tk
	}
	tk := ticket()
	// A refused attempt keeps the ticket.
	n, _, _ := s.Nonce("127.0.0.1")
	if _, err := s.Register(t.Context(), []byte("x"), e2ee.SignRegistration(testKeys(t), n).Encode(), tk); !errors.Is(err, ErrInvalidLink) {
		t.Fatalf("bad genesis: %v", err)
	}
	c, err := register(t, s, testKeys(t), tk)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	// The node attests the account, hashed with the user ID.
	if a := c.Attestation; a.Kind != KindOIDC || a.Node != s.net.Host.ID() || !bytes.Equal(a.Account, AccountHash(c.Set.User(), acct)) {
		t.Fatalf("attestation %+v, want OIDC by %s", a, s.net.Host.ID())
	}
	if err := (Validator{}).Validate(RecordKey(c.Set.User()), c.Record().Encode()); err != nil {
		t.Fatalf("a strict validator refuses the OIDC user: %v", err)
	}
	if _, err := register(t, s, testKeys(t), tk); !errors.Is(err, ErrBadTicket) {
		t.Fatalf("used ticket: %v", err)
	}
	if _, err := register(t, s, testKeys(t), ticket()); !errors.Is(err, ErrAlreadyRegistered) {
		t.Fatalf("second user for the account: %v", err)
	}
}

func TestGossipKeepsExtensionsAndForkWinners(t *testing.T) {
	s, _ := newTestService(t, DefaultConfig())
	k := []e2ee.DeviceKeys{testKeys(t), testKeys(t), testKeys(t)}
	full := testChain(t, k...)
	user := full.Set.User()
	part := func(n int) Chain {
		c, err := DecodeRecord(Record{User: user, Links: full.Links[:n], Attestation: full.Record().Attestation}.Encode(), user)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	set1 := part(1).Set
	req, _ := e2ee.NewAddDeviceRequest(set1.Head(), testKeys(t))
	alt, _ := e2ee.NewAddDevice(set1, k[0], req, time.Now())
	fork, err := DecodeRecord(Record{User: user, Links: [][]byte{full.Links[0], alt.Encode()}, Attestation: full.Record().Attestation}.Encode(), user)
	if err != nil {
		t.Fatal(err)
	}
	// No recovery key, no anchor: the smaller divergent link ID wins, and
	// full, which extends part(2), loses to fork exactly when part(2) does.
	forkWins := bytes.Compare(alt.ID().Bytes(), part(2).Set.Head().Link.Bytes()) < 0
	winner := map[bool]Chain{true: fork, false: full}[forkWins]
	ctx := t.Context()
	for _, step := range []struct {
		c    Chain
		rel  ident.ChainRelation
		keep Chain
	}{
		{part(2), ident.ChainExtends, part(2)}, // new to the node
		{part(1), ident.ChainRollback, part(2)},
		{fork, ident.ChainForked, map[bool]Chain{true: fork, false: part(2)}[forkWins]},
		{full, map[bool]ident.ChainRelation{true: ident.ChainForked, false: ident.ChainExtends}[forkWins], winner},
		{fork, map[bool]ident.ChainRelation{true: ident.ChainSame, false: ident.ChainForked}[forkWins], winner},
	} {
		res, _, err := s.consider(ctx, step.c)
		if err != nil || res.Relation != step.rel {
			t.Fatalf("version %d: %+v %v, want %v", step.c.Version(), res, err, step.rel)
		}
		if got, _ := s.local(ctx, user); got.Set.Head() != step.keep.Set.Head() {
			t.Fatalf("after version %d the node keeps %+v, want %+v", step.c.Version(), got.Set.Head(), step.keep.Set.Head())
		}
	}
	f, ok, err := s.Fork(ctx, user)
	loser := map[bool]Chain{true: full, false: fork}[forkWins]
	if err != nil || !ok || f.At != 2 || f.Rule != ident.RuleLinkID || f.Kept != winner.Set.Head() || f.Other != loser.Set.Head() {
		t.Fatalf("Fork = %+v, %v, %v", f, ok, err)
	}
}

func TestAnchorQueuePersists(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	q, _ := NewStoreQueue(db.Prefix("registry/"))
	c := testChain(t, testKeys(t), testKeys(t), testKeys(t))
	var links []ident.Link
	for _, enc := range c.Links {
		l, _ := ident.DecodeLink(enc)
		links = append(links, l)
		if err := q.Enqueue(c.Set.User(), l); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q, err = NewStoreQueue(db.Prefix("registry/"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Len(); n != 2 {
		t.Fatalf("%d entries after reopen, want 2", n)
	}
	q.Enqueue(c.Set.User(), links[0])
	items, _ := q.Next(10)
	if len(items) != 3 || items[0].Seq != 2 || items[1].Seq != 3 || items[2].Seq != 4 {
		t.Fatalf("items %+v", items)
	}
	if string(items[0].Link) != string(c.Links[1]) || string(items[2].Link) != string(c.Links[0]) {
		t.Fatal("wrong links")
	}
}

func TestEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var calls atomic.Int32
		done := make(chan struct{})
		go func() { service.Every(ctx, 12*time.Hour, func() { calls.Add(1) }); close(done) }()
		time.Sleep(12*time.Hour - time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 0 {
			t.Fatalf("%d calls before the first interval", n)
		}
		time.Sleep(24*time.Hour + time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 3 {
			t.Fatalf("%d calls after 36h, want 3", n)
		}
		cancel()
		<-done
	})
}
