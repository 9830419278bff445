package e2ee

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/volo-chat/volo/ident"
)

// groupFixture: alice (admin, two devices), bob and carol (one device each).
type groupFixture struct {
	alice, bob, carol *msgUser
	g                 GroupState
}

func newGroupFixture(t testing.TB) groupFixture {
	t.Helper()
	f := groupFixture{alice: newMsgUser(t, "alice", 2), bob: newMsgUser(t, "bob", 1), carol: newMsgUser(t, "carol", 1)}
	var err error
	f.g, err = NewGroup(f.alice.keys[0], f.alice.id(), []ident.UserID{f.carol.id(), f.bob.id(), f.alice.id()}, []ident.UserID{f.alice.id()}, testTime(10), detRand("group"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestGroupCreateAndUpdate(t *testing.T) {
	f := newGroupFixture(t)
	g := f.g
	if err := VerifyNewGroup(g, f.alice.set); err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(g.Members, ident.UserID.Compare) || len(g.Members) != 3 || !g.IsAdmin(f.alice.id()) || g.IsAdmin(f.bob.id()) {
		t.Fatalf("members %v admins %v", g.Members, g.Admins)
	}
	d, err := DecodeGroupState(g.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Encode(), g.Encode()) || d.Hash() != g.Hash() {
		t.Fatal("group state does not round trip")
	}
	// Alice makes bob an admin; bob then removes carol.
	g2, err := g.Next(f.alice.keys[1], f.alice.id(), g.Members, []ident.UserID{f.alice.id(), f.bob.id()}, testTime(20))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyGroupUpdate(g, g2, f.alice.set); err != nil {
		t.Fatal(err)
	}
	g3, err := g2.Next(f.bob.keys[0], f.bob.id(), []ident.UserID{f.alice.id(), f.bob.id()}, []ident.UserID{f.alice.id(), f.bob.id()}, testTime(30))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyGroupUpdate(g2, g3, f.bob.set); err != nil {
		t.Fatal(err)
	}
	if got := RemovedMembers(g2, g3); len(got) != 1 || !got[0].Equal(f.carol.id()) {
		t.Fatalf("removed %v", got)
	}
}

func TestGroupFailures(t *testing.T) {
	f := newGroupFixture(t)
	g := f.g
	members := g.Members
	// A non-admin cannot make the next state, and a state made by one
	// (here by signing it directly) does not verify.
	if _, err := g.Next(f.bob.keys[0], f.bob.id(), members, []ident.UserID{f.bob.id()}, testTime(20)); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("Next by a non-admin: got %v", err)
	}
	byBob, err := signGroupState(GroupState{ID: g.ID, Version: 2, Prev: g.Hash(), Members: members, Admins: []ident.UserID{f.bob.id()}}, f.bob.keys[0], f.bob.id(), testTime(20))
	if err != nil {
		t.Fatal(err)
	}
	next, err := g.Next(f.alice.keys[0], f.alice.id(), members, g.Admins, testTime(20))
	if err != nil {
		t.Fatal(err)
	}
	revoked := *f.alice
	revoked.revoke(t, 0)
	other, _ := NewGroup(f.alice.keys[0], f.alice.id(), members, g.Admins, testTime(10), detRand("other group"))
	resign := func(s GroupState) GroupState {
		s.Sig = f.alice.keys[0].Signing.Sign(ident.DomainGroup, s.signedBytes())
		return s
	}
	mod := func(fn func(s *GroupState)) GroupState {
		c := next
		fn(&c)
		return resign(c)
	}
	tests := []struct {
		name string
		next GroupState
		set  ident.DeviceSet
		want error
	}{
		{"non-admin signer", byBob, f.bob.set, ErrNotAdmin},
		{"revoked signer device", next, revoked.set, ident.ErrRevokedDevice},
		{"device set of another user", next, f.bob.set, ErrUnknownSender},
		{"bad signature", func() GroupState { c := next; c.Sig = bytes.Clone(c.Sig); c.Sig[5] ^= 1; return c }(), f.alice.set, ident.ErrBadSignature},
		{"other device's signature", func() GroupState {
			c := next
			c.Sig = f.alice.keys[1].Signing.Sign(ident.DomainGroup, c.signedBytes())
			return c
		}(), f.alice.set, ident.ErrBadSignature},
		{"version skipped", mod(func(s *GroupState) { s.Version = 3 }), f.alice.set, ErrGroupOrder},
		{"wrong previous hash", mod(func(s *GroupState) { s.Prev[0] ^= 1 }), f.alice.set, ErrGroupOrder},
		{"another group", mod(func(s *GroupState) { s.ID = other.ID }), f.alice.set, ErrGroupOrder},
		{"time before previous", mod(func(s *GroupState) { s.Time = testTime(0) }), f.alice.set, ErrGroupOrder},
		{"admin not a member", mod(func(s *GroupState) { s.Admins = sortUsers([]ident.UserID{f.alice.id(), newMsgUser(t, "dave", 1).id()}) }), f.alice.set, ErrInvalidGroup},
		{"no members", mod(func(s *GroupState) { s.Members, s.Admins = nil, nil }), f.alice.set, ErrInvalidGroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifyGroupUpdate(g, tt.next, tt.set); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if err := VerifyNewGroup(next, f.alice.set); !errors.Is(err, ErrGroupOrder) {
		t.Fatalf("version 2 as a new group: got %v", err)
	}
	notAdmin, _ := signGroupState(GroupState{ID: other.ID, Version: 1, Members: members, Admins: []ident.UserID{f.alice.id()}}, f.bob.keys[0], f.bob.id(), testTime(0))
	if err := VerifyNewGroup(notAdmin, f.bob.set); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("new group signed by a non-admin: got %v", err)
	}
	if _, err := NewGroup(f.bob.keys[0], f.bob.id(), members, []ident.UserID{f.alice.id()}, testTime(0), nil); !errors.Is(err, ErrNotAdmin) {
		t.Fatalf("NewGroup by a non-admin: got %v", err)
	}
}

func TestGroupStateTamperEveryByte(t *testing.T) {
	f := newGroupFixture(t)
	enc := f.g.Encode()
	for pos := range enc {
		bad := bytes.Clone(enc)
		bad[pos] ^= 0x02
		g, err := DecodeGroupState(bad)
		if err == nil {
			err = VerifyNewGroup(g, f.alice.set)
		}
		if err == nil {
			t.Fatalf("byte %d flipped: state accepted", pos)
		}
		if !slices.ContainsFunc([]error{ident.ErrMalformed, ident.ErrNonCanonical, ident.ErrBadSignature, ErrUnknownSender, ErrNotAdmin, ErrGroupOrder}, func(e error) bool { return errors.Is(err, e) }) {
			t.Errorf("byte %d flipped: unexpected error %v", pos, err)
		}
	}
}

// TestGroupRemoveMember: after carol is removed every remaining sender must
// renew; the new sessions reach alice and bob but not carol.
func TestGroupRemoveMember(t *testing.T) {
	f := newGroupFixture(t)
	all := sets(f.alice, f.bob, f.carol)
	now := testTime(100)
	members := []*msgUser{f.alice, f.bob, f.carol}
	// Every member device starts a session and every other device opens it.
	type sender struct {
		u *msgUser
		k DeviceKeys
		s *SenderSession
	}
	var senders []sender
	inbox := map[ident.DeviceID]*ReceiverSessions{}
	for _, u := range members {
		for _, k := range u.keys {
			inbox[k.ID()] = &ReceiverSessions{}
		}
	}
	for _, u := range members {
		k := u.keys[0]
		s, b, err := NewGroupSession(f.g, k, u.id(), all, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		for id, rs := range inbox {
			if id.Equal(k.ID()) {
				continue
			}
			rk := findKeys(members, id)
			rs.Add(mustOpen(t, b, u.set, rk))
		}
		senders = append(senders, sender{u, k, s})
	}
	for _, sd := range senders {
		msg := mustEncrypt(t, sd.s, sd.k, "hello group")
		for id, rs := range inbox {
			if id.Equal(sd.k.ID()) {
				continue
			}
			if _, pt, err := rs.Decrypt(msg); err != nil || string(pt) != "hello group" {
				t.Fatalf("%s reading %s: %q %v", id, sd.u.name, pt, err)
			}
		}
	}
	// Alice removes carol.
	g2, err := f.g.Next(f.alice.keys[0], f.alice.id(), []ident.UserID{f.alice.id(), f.bob.id()}, f.g.Admins, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyGroupUpdate(f.g, g2, f.alice.set); err != nil {
		t.Fatal(err)
	}
	remaining := sets(f.alice, f.bob)
	fp := FingerprintParticipants(remaining)
	policy := DefaultRenewalPolicy()
	for _, sd := range senders[:2] {
		if !policy.NeedsRenewal(sd.s, now, fp) {
			t.Fatalf("%s's session does not need renewal after a member was removed", sd.u.name)
		}
	}
	if _, _, err := NewGroupSession(g2, f.alice.keys[0], f.alice.id(), all, now, nil); !errors.Is(err, ErrGroupMembers) {
		t.Fatalf("session for the new state with the old members: got %v", err)
	}
	if _, _, err := NewGroupSession(g2, f.carol.keys[0], f.carol.id(), remaining, now, nil); !errors.Is(err, ErrGroupMembers) {
		t.Fatalf("session by a removed member: got %v", err)
	}
	for _, sd := range senders[:2] {
		s, b, err := NewGroupSession(g2, sd.k, sd.u.id(), remaining, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		if policy.NeedsRenewal(s, now, fp) {
			t.Fatal("the new session needs renewal at once")
		}
		if _, err := OpenKeyBundle(b, sd.u.set, f.carol.keys[0]); !errors.Is(err, ErrNotRecipient) {
			t.Fatalf("carol opening %s's new bundle: got %v, want ErrNotRecipient", sd.u.name, err)
		}
		for _, u := range []*msgUser{f.alice, f.bob} {
			for _, k := range u.keys {
				if !k.ID().Equal(sd.k.ID()) {
					inbox[k.ID()].Add(mustOpen(t, b, sd.u.set, k))
				}
			}
		}
		msg := mustEncrypt(t, s, sd.k, "carol is gone")
		if _, _, err := inbox[f.carol.keys[0].ID()].Decrypt(msg); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("carol reading %s's new message: got %v, want ErrUnknownSession", sd.u.name, err)
		}
		for _, u := range []*msgUser{f.alice, f.bob} {
			for _, k := range u.keys {
				if k.ID().Equal(sd.k.ID()) {
					continue
				}
				if _, pt, err := inbox[k.ID()].Decrypt(msg); err != nil || string(pt) != "carol is gone" {
					t.Fatalf("%s reading %s's new message: %q %v", u.name, sd.u.name, pt, err)
				}
			}
		}
	}
}

func findKeys(users []*msgUser, id ident.DeviceID) DeviceKeys {
	for _, u := range users {
		for _, k := range u.keys {
			if k.ID().Equal(id) {
				return k
			}
		}
	}
	panic("unknown device")
}
