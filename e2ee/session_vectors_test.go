package e2ee

import (
	"encoding/hex"
	"testing"
	"testing/cryptotest"

	"github.com/volo-chat/volo/ident"
)

// Test vectors for messages, key bundles and group states: fixed device
// keys (fixedDeviceKeys), fixed times (testTime) and fixed randomness
// (detRand for session keys and IDs, cryptotest.SetGlobalRandom for HPKE).

type messageVectorMsg struct {
	Counter    uint32 `json:"counter"`
	Plaintext  string `json:"plaintext"`
	MessageKey string `json:"message_key"` // AES-256 key || GCM nonce
	Header     string `json:"header_cbor"`
	Message    string `json:"message_cbor"`
}

type messageVector struct {
	Comment      string             `json:"comment"`
	SenderUser   string             `json:"sender_user_id"`
	SenderDevice string             `json:"sender_device_id"`
	SenderPublic string             `json:"sender_signing_public"`
	Conversation string             `json:"conversation_id"`
	Session      string             `json:"session_id"`
	SessionKey   string             `json:"session_key"`
	Messages     []messageVectorMsg `json:"messages"`
}

func makeMessageVector(t *testing.T) messageVector {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, err := NewSenderSession(alice.keys[0], alice.id(), DirectConversationID(alice.id(), bob.id()), sets(alice, bob), testTime(0), detRand("message vector"))
	if err != nil {
		t.Fatal(err)
	}
	v := messageVector{
		Comment:      "alice's device 0 to bob: the first two messages of a session",
		SenderUser:   alice.id().String(),
		SenderDevice: alice.keys[0].ID().String(),
		SenderPublic: hex.EncodeToString(alice.keys[0].Signing.Public().Bytes()),
		Conversation: s.Conversation().String(),
		Session:      s.ID().String(),
		SessionKey:   hex.EncodeToString(s.chainKey[:]),
	}
	for _, pt := range []string{"hello bob", "second message"} {
		ck := s.chainKey
		mk := chainStep(&ck)
		enc := mustEncrypt(t, s, alice.keys[0], pt)
		m, err := DecodeMessage(enc)
		if err != nil {
			t.Fatal(err)
		}
		v.Messages = append(v.Messages, messageVectorMsg{
			Counter:    m.Header.Counter,
			Plaintext:  pt,
			MessageKey: hex.EncodeToString(mk[:]),
			Header:     hex.EncodeToString(m.header),
			Message:    hex.EncodeToString(enc),
		})
	}
	return v
}

func TestMessageVectors(t *testing.T) {
	checkVectorFile(t, "session_message_vectors.json", makeMessageVector(t))

	var v messageVector
	readVectorFile(t, "session_message_vectors.json", &v)
	// A receiver built from the committed session key alone.
	r := &ReceiverSession{}
	var err error
	if r.id, err = ParseSessionID(v.Session); err != nil {
		t.Fatal(err)
	}
	if r.conversation, err = ParseConversationID(v.Conversation); err != nil {
		t.Fatal(err)
	}
	if r.senderUser, err = ident.ParseUserID(v.SenderUser); err != nil {
		t.Fatal(err)
	}
	if r.sender, err = ident.ParseDeviceID(v.SenderDevice); err != nil {
		t.Fatal(err)
	}
	if r.signing, err = ident.ParseSigningPublic(mustHex(t, v.SenderPublic)); err != nil {
		t.Fatal(err)
	}
	copy(r.chainKey[:], mustHex(t, v.SessionKey))
	for _, vm := range v.Messages {
		ck := r.chainKey
		if mk := chainStep(&ck); hex.EncodeToString(mk[:]) != vm.MessageKey {
			t.Fatalf("message %d: message key differs", vm.Counter)
		}
		m, err := DecodeMessage(mustHex(t, vm.Message))
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(m.Encode()) != vm.Message || hex.EncodeToString(m.Header.encode()) != vm.Header {
			t.Fatalf("message %d does not re-encode to the vector bytes", vm.Counter)
		}
		pt, err := r.Decrypt(m)
		if err != nil {
			t.Fatal(err)
		}
		if string(pt) != vm.Plaintext || m.Header.Counter != vm.Counter {
			t.Fatalf("message %d: got %q", vm.Counter, pt)
		}
	}
}

type keyBundleVector struct {
	Comment       string `json:"comment"`
	GlobalRandom  uint64 `json:"cryptotest_global_random_seed"`
	SenderDevice  string `json:"sender_device_id"`
	Session       string `json:"session_id"`
	SessionKey    string `json:"session_key"`
	Recipient     string `json:"recipient_device_id"`
	RecipientInfo string `json:"recipient_hpke_info"`
	Bundle        string `json:"bundle_cbor"`
}

const keyBundleVectorSeed = 1

// makeKeyBundleVector: alice (two devices) and bob (one); alice's device 0
// seals to bob's device and to her device 1.
func makeKeyBundleVector(t *testing.T) (keyBundleVector, *msgUser, *msgUser) {
	alice, bob := newMsgUser(t, "alice", 2), newMsgUser(t, "bob", 1)
	cryptotest.SetGlobalRandom(t, keyBundleVectorSeed)
	s, err := NewSenderSession(alice.keys[0], alice.id(), DirectConversationID(alice.id(), bob.id()), sets(alice, bob), testTime(0), detRand("bundle vector"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyBundle(s, alice.keys[0], sets(alice, bob))
	if err != nil {
		t.Fatal(err)
	}
	return keyBundleVector{
		Comment:       "alice's device 0 seals a session to bob's device and to her own device 1; HPKE randomness from testing/cryptotest.SetGlobalRandom(seed)",
		GlobalRandom:  keyBundleVectorSeed,
		SenderDevice:  alice.keys[0].ID().String(),
		Session:       s.ID().String(),
		SessionKey:    hex.EncodeToString(s.chainKey[:]),
		Recipient:     bob.keys[0].ID().String(),
		RecipientInfo: hex.EncodeToString(keyDistInfo(s.Conversation(), s.ID(), s.Sender(), bob.keys[0].ID())),
		Bundle:        hex.EncodeToString(b.Encode()),
	}, alice, bob
}

func TestKeyBundleVectors(t *testing.T) {
	got, alice, bob := makeKeyBundleVector(t)
	checkVectorFile(t, "keydist_vectors.json", got)

	var v keyBundleVector
	readVectorFile(t, "keydist_vectors.json", &v)
	b, err := DecodeKeyBundle(mustHex(t, v.Bundle))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(b.Encode()) != v.Bundle || len(b.Entries) != 2 {
		t.Fatal("bundle does not re-encode to the vector bytes")
	}
	if b.Sender.String() != v.SenderDevice || b.Session.String() != v.Session {
		t.Fatal("bundle fields differ")
	}
	if hex.EncodeToString(keyDistInfo(b.Conversation, b.Session, b.Sender, bob.keys[0].ID())) != v.RecipientInfo {
		t.Fatal("HPKE info differs")
	}
	r, err := OpenKeyBundle(b, alice.set, bob.keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(r.chainKey[:]) != v.SessionKey || r.sender.String() != v.SenderDevice {
		t.Fatal("opened session key differs")
	}
}

type groupVector struct {
	Comment string   `json:"comment"`
	States  []string `json:"states_cbor"`
	Hashes  []string `json:"state_hashes"`
}

func makeGroupVector(t *testing.T) (groupVector, groupFixture) {
	f := newGroupFixture(t)
	g2, err := f.g.Next(f.alice.keys[0], f.alice.id(), []ident.UserID{f.alice.id(), f.bob.id()}, []ident.UserID{f.alice.id(), f.bob.id()}, testTime(20))
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := f.g.Hash(), g2.Hash()
	return groupVector{
		Comment: "version 1: alice (admin), bob, carol, signed by alice's device 0; version 2: carol removed, bob made admin",
		States:  []string{hex.EncodeToString(f.g.Encode()), hex.EncodeToString(g2.Encode())},
		Hashes:  []string{hex.EncodeToString(h1[:]), hex.EncodeToString(h2[:])},
	}, f
}

func TestGroupVectors(t *testing.T) {
	got, f := makeGroupVector(t)
	checkVectorFile(t, "group_vectors.json", got)

	var v groupVector
	readVectorFile(t, "group_vectors.json", &v)
	var states []GroupState
	for i, s := range v.States {
		g, err := DecodeGroupState(mustHex(t, s))
		if err != nil {
			t.Fatal(err)
		}
		h := g.Hash()
		if hex.EncodeToString(g.Encode()) != s || hex.EncodeToString(h[:]) != v.Hashes[i] {
			t.Fatalf("state %d does not re-encode to the vector bytes", i)
		}
		states = append(states, g)
	}
	if err := VerifyNewGroup(states[0], f.alice.set); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGroupUpdate(states[0], states[1], f.alice.set); err != nil {
		t.Fatal(err)
	}
}
