package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func TestKeyBundleRecipients(t *testing.T) {
	alice, bob, carol := newMsgUser(t, "alice", 3), newMsgUser(t, "bob", 2), newMsgUser(t, "carol", 1)
	bob.revoke(t, 0)
	s, err := NewSenderSession(alice.keys[1], alice.id(), ConversationID{9}, sets(alice, bob, carol), testTime(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyBundle(s, alice.keys[1], sets(carol, alice, bob))
	if err != nil {
		t.Fatal(err)
	}
	want := []ident.DeviceID{alice.keys[0].ID(), alice.keys[2].ID(), bob.keys[1].ID(), carol.keys[0].ID()}
	slices.SortFunc(want, ident.DeviceID.Compare)
	var got []ident.DeviceID
	for _, e := range b.Entries {
		got = append(got, e.Recipient)
		if len(e.Sealed) != SealedSessionKeySize {
			t.Fatalf("sealed key of %d bytes, want %d", len(e.Sealed), SealedSessionKeySize)
		}
	}
	if !slices.EqualFunc(got, want, ident.DeviceID.Equal) {
		t.Fatalf("recipients %v, want %v (every active device but the sender's)", got, want)
	}
	// Every recipient opens the same session; the sender and the revoked
	// device are not recipients.
	for _, k := range []DeviceKeys{alice.keys[0], alice.keys[2], bob.keys[1], carol.keys[0]} {
		r := mustOpen(t, b, alice.set, k)
		if r.chainKey != s.chainKey || r.ID() != s.ID() || r.Conversation() != s.Conversation() {
			t.Fatal("opened session differs from the sender's")
		}
	}
	for _, k := range []DeviceKeys{alice.keys[1], bob.keys[0]} {
		if _, err := OpenKeyBundle(b, alice.set, k); !errors.Is(err, ErrNotRecipient) {
			t.Fatalf("got %v, want ErrNotRecipient", err)
		}
	}
	// Encoding round trip.
	enc := b.Encode()
	d, err := DecodeKeyBundle(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Encode(), enc) || !d.Created.Equal(testTime(0)) {
		t.Fatal("bundle does not round trip")
	}
}

func TestKeyBundleFailures(t *testing.T) {
	alice, bob, mallory := newMsgUser(t, "alice", 2), newMsgUser(t, "bob", 1), newMsgUser(t, "mallory", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	// resign returns b changed by f and signed again by alice's device 0,
	// as a sender that misbehaves could.
	resign := func(f func(b *KeyBundle)) KeyBundle {
		c := b
		c.Entries = slices.Clone(b.Entries)
		f(&c)
		c.Sig = alice.keys[0].Signing.Sign(ident.DomainKeyDist, c.signedBytes())
		return c
	}
	revoked := *alice
	revoked.revoke(t, 0)
	bobEntry, _ := b.Entry(bob.keys[0].ID())
	tests := []struct {
		name      string
		b         KeyBundle
		senderSet ident.DeviceSet
		want      error
	}{
		{"another user's device set", b, mallory.set, ErrUnknownSender},
		{"revoked sender device", b, revoked.set, ident.ErrRevokedDevice},
		{"sender device field changed", resign(func(b *KeyBundle) { b.Sender = alice.keys[1].ID() }), alice.set, ident.ErrBadSignature},
		{"bad signature", func() KeyBundle { c := b; c.Sig = bytes.Clone(b.Sig); c.Sig[0] ^= 1; return c }(), alice.set, ident.ErrBadSignature},
		{"signed by another device of the sender", func() KeyBundle {
			c := b
			c.Sig = alice.keys[1].Signing.Sign(ident.DomainKeyDist, b.signedBytes())
			return c
		}(), alice.set, ident.ErrBadSignature},
		{"corrupt sealed key", resign(func(b *KeyBundle) {
			for i := range b.Entries {
				b.Entries[i].Sealed = bytes.Clone(b.Entries[i].Sealed)
				b.Entries[i].Sealed[SealedSessionKeySize-1] ^= 1
			}
		}), alice.set, ErrKeyBundleOpen},
		{"sealed key of another recipient", resign(func(b *KeyBundle) {
			for i := range b.Entries {
				b.Entries[i].Sealed = bobEntry.Sealed
			}
		}), alice.set, nil},
		{"another session ID", resign(func(b *KeyBundle) { b.Session[0] ^= 1 }), alice.set, ErrKeyBundleOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []DeviceKeys{alice.keys[1]} {
				_, err := OpenKeyBundle(tt.b, tt.senderSet, k)
				want := tt.want
				if want == nil {
					want = ErrKeyBundleOpen // alice's device 1 given bob's sealed key
				}
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %v", err, want)
				}
			}
		})
	}
	// A device of the sender that is unknown to the set it is checked against.
	t.Run("unknown sender device", func(t *testing.T) {
		extra := *alice
		extra.keys = slices.Clone(alice.keys)
		k := extra.addDevice(t)
		s2, err := NewSenderSession(k, alice.id(), s.Conversation(), sets(&extra, bob), testTime(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := NewKeyBundle(s2, k, sets(&extra, bob))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenKeyBundle(b2, alice.set, bob.keys[0]); !errors.Is(err, ErrUnknownSender) {
			t.Fatalf("got %v, want ErrUnknownSender", err)
		}
	})
	// Making bundles.
	mustEncrypt(t, s, alice.keys[0], "first")
	if _, err := NewKeyBundle(s, alice.keys[0], sets(alice, bob)); !errors.Is(err, ErrSessionStarted) {
		t.Fatalf("bundle after the first message: got %v", err)
	}
	s3, _ := directSession(t, alice, bob, testTime(0))
	if _, err := NewKeyBundle(s3, alice.keys[1], sets(alice, bob)); !errors.Is(err, ident.ErrBadKey) {
		t.Fatalf("bundle signed by another device: got %v", err)
	}
	s4, err := NewSenderSession(alice.keys[0], alice.id(), ConversationID{1}, sets(bob), testTime(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeyBundle(s4, alice.keys[0], sets(bob)); !errors.Is(err, ErrUnknownSender) {
		t.Fatalf("participants without the sender's own set: got %v", err)
	}
}

// TestKeyBundleTamperEveryByte flips a bit in every byte of an encoded
// bundle: each copy must be refused when decoded or opened.
func TestKeyBundleTamperEveryByte(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	_, b := directSession(t, alice, bob, testTime(0))
	enc := b.Encode()
	for pos := range enc {
		bad := bytes.Clone(enc)
		bad[pos] ^= 0x10
		d, err := DecodeKeyBundle(bad)
		if err == nil {
			_, err = OpenKeyBundle(d, alice.set, bob.keys[0])
		}
		if err == nil {
			t.Fatalf("byte %d flipped: bundle accepted", pos)
		}
		if !slices.ContainsFunc([]error{ident.ErrMalformed, ident.ErrNonCanonical, ident.ErrBadSignature, ErrUnknownSender}, func(e error) bool { return errors.Is(err, e) }) {
			t.Errorf("byte %d flipped: unexpected error %v", pos, err)
		}
	}
}

func TestDecodeKeyBundleRejects(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 3), newMsgUser(t, "bob", 1)
	_, b := directSession(t, alice, bob, testTime(0))
	for name, f := range map[string]func(b *KeyBundle){
		"unsorted":     func(b *KeyBundle) { b.Entries[0], b.Entries[1] = b.Entries[1], b.Entries[0] },
		"repeated":     func(b *KeyBundle) { b.Entries[1] = b.Entries[0] },
		"no entries":   func(b *KeyBundle) { b.Entries = nil },
		"short sealed": func(b *KeyBundle) { b.Entries[0].Sealed = b.Entries[0].Sealed[:100] },
		"no signature": func(b *KeyBundle) { b.Sig = nil },
	} {
		c := b
		c.Entries = slices.Clone(b.Entries)
		f(&c)
		if _, err := DecodeKeyBundle(c.Encode()); !errors.Is(err, ident.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	w := b.wire(true)
	w.Session = w.Session[:8]
	if _, err := DecodeKeyBundle(marshalCBOR(w)); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("short session ID: got %v, want ErrMalformed", err)
	}
	if _, err := DecodeKeyBundle(make([]byte, MaxKeyBundleSize+1)); !errors.Is(err, ident.ErrMalformed) {
		t.Errorf("oversized: got %v", err)
	}
}

// bigConversation returns users holding n devices in all, at most
// MaxActiveDevices each.
func bigConversation(b testing.TB, n int) []*msgUser {
	var users []*msgUser
	for n > 0 {
		k := min(n, ident.MaxActiveDevices)
		users = append(users, newMsgUser(b, fmt.Sprintf("user %d", len(users)), k))
		n -= k
	}
	return users
}

const benchRecipients = 3000

// BenchmarkKeyBundleSeal3000 seals one session to 3000 devices and signs
// the bundle.
func BenchmarkKeyBundleSeal3000(b *testing.B) {
	users := bigConversation(b, benchRecipients+1)
	parts := sets(users...)
	sender := users[0]
	for b.Loop() {
		s, err := NewSenderSession(sender.keys[0], sender.id(), ConversationID{1}, parts, testTime(0), nil)
		if err != nil {
			b.Fatal(err)
		}
		kb, err := NewKeyBundle(s, sender.keys[0], parts)
		if err != nil {
			b.Fatal(err)
		}
		if len(kb.Entries) != benchRecipients {
			b.Fatalf("%d entries", len(kb.Entries))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/bundle")
}

// BenchmarkKeyBundleOpen3000 decodes a 3000-device bundle, verifies it and
// opens one entry.
func BenchmarkKeyBundleOpen3000(b *testing.B) {
	users := bigConversation(b, benchRecipients+1)
	parts := sets(users...)
	sender, last := users[0], users[len(users)-1]
	s, err := NewSenderSession(sender.keys[0], sender.id(), ConversationID{1}, parts, testTime(0), nil)
	if err != nil {
		b.Fatal(err)
	}
	kb, err := NewKeyBundle(s, sender.keys[0], parts)
	if err != nil {
		b.Fatal(err)
	}
	enc := kb.Encode()
	for b.Loop() {
		d, err := DecodeKeyBundle(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := OpenKeyBundle(d, sender.set, last.keys[len(last.keys)-1]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/open")
	b.ReportMetric(float64(len(enc))/(1<<20), "MiB/bundle")
}
