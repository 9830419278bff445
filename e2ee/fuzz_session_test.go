package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/volo-chat/volo/ident"
)

// sessionFuzzFixture: alice's session to bob, bob's receiver state at its
// start, and the first messages.
func sessionFuzzFixture(f *testing.F) (*SenderSession, *ReceiverSession, [][]byte, []string) {
	alice, bob := newMsgUser(f, "alice", 1), newMsgUser(f, "bob", 1)
	s, err := NewSenderSession(alice.keys[0], alice.id(), DirectConversationID(alice.id(), bob.id()), sets(alice, bob), testTime(0), detRand("fuzz session"))
	if err != nil {
		f.Fatal(err)
	}
	b, err := NewKeyBundle(s, alice.keys[0], sets(alice, bob))
	if err != nil {
		f.Fatal(err)
	}
	r := mustOpen(f, b, alice.set, bob.keys[0])
	var msgs [][]byte
	var pts []string
	for i := range 4 {
		pt := fmt.Sprintf("fuzz message %d", i)
		msgs = append(msgs, mustEncrypt(f, s, alice.keys[0], pt))
		pts = append(pts, pt)
	}
	return s, r, msgs, pts
}

func isOneOf(err error, kinds ...error) bool {
	return slices.ContainsFunc(kinds, func(k error) bool { return errors.Is(err, k) })
}

func FuzzDecodeMessage(f *testing.F) {
	_, _, msgs, _ := sessionFuzzFixture(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !bytes.Equal(m.Encode(), data) {
			t.Fatal("decoded message does not re-encode to its input")
		}
	})
}

func FuzzDecryptMessage(f *testing.F) {
	_, r0, msgs, pts := sessionFuzzFixture(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := *r0
		pt, err := decryptWith(&r, data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical, ErrUnknownSession, ident.ErrBadSignature, ErrReplay, ErrOutsideWindow, ErrTampered) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if r.next != r0.next || len(r.skipped) != 0 || r.chainKey != r0.chainKey {
				t.Fatal("a refused message changed the receiver state")
			}
			return
		}
		// Only the sender's messages verify.
		i := slices.IndexFunc(msgs, func(m []byte) bool { return bytes.Equal(m, data) })
		if i < 0 || string(pt) != pts[i] {
			t.Fatalf("accepted a message the sender did not write: %q", pt)
		}
	})
}

func FuzzUnmarshalReceiverState(f *testing.F) {
	_, r0, msgs, _ := sessionFuzzFixture(f)
	r := *r0
	enc, _ := r.MarshalBinary()
	f.Add(enc)
	decryptWith(&r, msgs[2])
	enc, _ = r.MarshalBinary()
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalReceiverSession(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		again, _ := r.MarshalBinary()
		if !bytes.Equal(again, data) {
			t.Fatal("receiver state does not re-encode to its input")
		}
		// A restored state must not break the window invariants.
		for _, m := range msgs {
			decryptWith(r, m)
		}
		if len(r.skipped) > MaxSkippedMessageKeys {
			t.Fatalf("%d skipped keys", len(r.skipped))
		}
	})
}

func FuzzUnmarshalSenderSession(f *testing.F) {
	s, _, _, _ := sessionFuzzFixture(f)
	enc, _ := s.MarshalBinary()
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := UnmarshalSenderSession(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		again, _ := s.MarshalBinary()
		if !bytes.Equal(again, data) {
			t.Fatal("sender session does not re-encode to its input")
		}
	})
}
