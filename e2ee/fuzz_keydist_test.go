package e2ee

import (
	"bytes"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func keyBundleFuzzFixture(f *testing.F) (alice, bob *msgUser, s *SenderSession, enc []byte) {
	alice, bob = newMsgUser(f, "alice", 2), newMsgUser(f, "bob", 1)
	s, err := NewSenderSession(alice.keys[0], alice.id(), DirectConversationID(alice.id(), bob.id()), sets(alice, bob), testTime(0), detRand("fuzz bundle"))
	if err != nil {
		f.Fatal(err)
	}
	b, err := NewKeyBundle(s, alice.keys[0], sets(alice, bob))
	if err != nil {
		f.Fatal(err)
	}
	return alice, bob, s, b.Encode()
}

func FuzzDecodeKeyBundle(f *testing.F) {
	_, _, _, enc := keyBundleFuzzFixture(f)
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeKeyBundle(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !bytes.Equal(b.Encode(), data) {
			t.Fatal("decoded bundle does not re-encode to its input")
		}
	})
}

func FuzzOpenKeyBundle(f *testing.F) {
	alice, bob, s, enc := keyBundleFuzzFixture(f)
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeKeyBundle(data)
		if err != nil {
			return
		}
		r, err := OpenKeyBundle(b, alice.set, bob.keys[0])
		if err != nil {
			if !isOneOf(err, ErrUnknownSender, ident.ErrRevokedDevice, ident.ErrBadSignature, ErrNotRecipient, ErrKeyBundleOpen, ident.ErrMalformed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Each fuzzing process makes its own fixture, and HPKE seals are
		// randomized, so compare what alice signed, not the bytes.
		if r.chainKey != s.chainKey || r.ID() != s.ID() || !b.Sender.Equal(s.Sender()) {
			t.Fatal("opened a bundle the sender did not make")
		}
	})
}
