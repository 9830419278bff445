package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
)

// msgUser is a user with a verified chain and the keys of its devices
// (revoked ones included), for session, key distribution and group tests.
type msgUser struct {
	name string
	keys []DeviceKeys
	set  ident.DeviceSet
}

// newMsgUser makes a user with n devices named name/0, name/1, ...
func newMsgUser(t testing.TB, name string, n int) *msgUser {
	t.Helper()
	u := &msgUser{name: name}
	k := fixedDeviceKeys(t, name+"/0")
	g, err := NewGenesis(k, testTime(0))
	if err != nil {
		t.Fatal(err)
	}
	if u.set, err = ident.VerifyChain(g.UserID(), []ident.Link{g}); err != nil {
		t.Fatal(err)
	}
	u.keys = []DeviceKeys{k}
	for range n - 1 {
		u.addDevice(t)
	}
	return u
}

func (u *msgUser) id() ident.UserID { return u.set.User() }

// addDevice adds device name/len(keys), signed by the first active device.
func (u *msgUser) addDevice(t testing.TB) DeviceKeys {
	t.Helper()
	k := fixedDeviceKeys(t, fmt.Sprintf("%s/%d", u.name, len(u.keys)))
	req, err := NewAddDeviceRequest(u.set.Head(), k)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewAddDevice(u.set, u.signer(), req, testTime(int64(u.set.Version())))
	if err != nil {
		t.Fatal(err)
	}
	if u.set, err = u.set.Apply(l); err != nil {
		t.Fatal(err)
	}
	u.keys = append(u.keys, k)
	return k
}

// revoke revokes device i, signed by another active device.
func (u *msgUser) revoke(t testing.TB, i int) {
	t.Helper()
	var signer DeviceKeys
	for j, k := range u.keys {
		if _, ok := u.set.Lookup(k.ID()); ok && j != i {
			signer = k
			break
		}
	}
	l, err := NewRevokeDevice(u.set, signer, u.keys[i].ID(), testTime(int64(u.set.Version())))
	if err != nil {
		t.Fatal(err)
	}
	if u.set, err = u.set.Apply(l); err != nil {
		t.Fatal(err)
	}
}

// signer returns the first active device's keys.
func (u *msgUser) signer() DeviceKeys {
	for _, k := range u.keys {
		if _, ok := u.set.Lookup(k.ID()); ok {
			return k
		}
	}
	panic("no active device")
}

func sets(users ...*msgUser) []ident.DeviceSet {
	out := make([]ident.DeviceSet, len(users))
	for i, u := range users {
		out[i] = u.set
	}
	return out
}

// directSession starts a session of alice's device 0 with bob and returns
// it with its bundle, encoded and decoded as it travels.
func directSession(t testing.TB, alice, bob *msgUser, now time.Time) (*SenderSession, KeyBundle) {
	t.Helper()
	conv := DirectConversationID(alice.id(), bob.id())
	s, err := NewSenderSession(alice.keys[0], alice.id(), conv, sets(alice, bob), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyBundle(s, alice.keys[0], sets(alice, bob))
	if err != nil {
		t.Fatal(err)
	}
	b, err = DecodeKeyBundle(b.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func mustOpen(t testing.TB, b KeyBundle, sender ident.DeviceSet, recipient DeviceKeys) *ReceiverSession {
	t.Helper()
	r, err := OpenKeyBundle(b, sender, recipient)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustEncrypt(t testing.TB, s *SenderSession, k DeviceKeys, pt string) []byte {
	t.Helper()
	m, err := s.Encrypt(k.Signing, []byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func decryptWith(r *ReceiverSession, data []byte) ([]byte, error) {
	m, err := DecodeMessage(data)
	if err != nil {
		return nil, err
	}
	return r.Decrypt(m)
}

func TestSessionRoundTrip(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 2), newMsgUser(t, "bob", 2)
	s, b := directSession(t, alice, bob, testTime(0))
	if len(b.Entries) != 3 {
		t.Fatalf("bundle has %d entries, want 3 (bob's two devices and alice's other one)", len(b.Entries))
	}
	var receivers []ReceiverSessions
	for _, k := range []DeviceKeys{bob.keys[0], bob.keys[1], alice.keys[1]} {
		var rs ReceiverSessions
		rs.Add(mustOpen(t, b, alice.set, k))
		receivers = append(receivers, rs)
	}
	for i := range 10 {
		msg := mustEncrypt(t, s, alice.keys[0], fmt.Sprintf("message %d", i))
		for j := range receivers {
			m, pt, err := receivers[j].Decrypt(msg)
			if err != nil {
				t.Fatalf("receiver %d, message %d: %v", j, i, err)
			}
			if string(pt) != fmt.Sprintf("message %d", i) || m.Header.Counter != uint32(i) || !m.Header.Sender.Equal(alice.keys[0].ID()) {
				t.Fatalf("receiver %d, message %d: got %q %+v", j, i, pt, m.Header)
			}
		}
	}
	if s.Sent() != 10 {
		t.Fatalf("Sent = %d", s.Sent())
	}
	// Another sender session in the same conversation is unknown to them.
	s2, _ := directSession(t, alice, bob, testTime(1))
	if _, _, err := receivers[0].Decrypt(mustEncrypt(t, s2, alice.keys[0], "new session")); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("unknown session: got %v", err)
	}
	r, _ := receivers[0].Lookup(alice.keys[0].ID(), s.ID())
	if _, err := decryptWith(r, mustEncrypt(t, s2, alice.keys[0], "x")); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("message of another session: got %v", err)
	}
}

// TestEncodeMessageMatchesCBOR checks the hand-written message encoding
// against the CBOR library for every length form of the ciphertext.
func TestEncodeMessageMatchesCBOR(t *testing.T) {
	h := MessageHeader{Conversation: ConversationID{1}, Session: SessionID{2}, SenderUser: newMsgUser(t, "alice", 1).id(), Counter: 7}
	h.Sender = fixedDeviceKeys(t, "alice/0").ID()
	hb := h.encode()
	for _, n := range []int{0, 1, 23, 24, 255, 256, 65535, 65536} {
		ct := make([]byte, n)
		for _, sig := range [][]byte{nil, make([]byte, ident.SignatureSize)} {
			want := marshalCBOR(messageWire{Header: hb, Ciphertext: ct, Sig: sig})
			if got := encodeMessage(hb, ct, sig); !bytes.Equal(got, want) {
				t.Fatalf("ciphertext of %d bytes, sig %d: encodings differ", n, len(sig))
			}
		}
	}
}

func TestEncryptRejects(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, _ := directSession(t, alice, bob, testTime(0))
	if _, err := s.Encrypt(bob.keys[0].Signing, []byte("hi")); !errors.Is(err, ident.ErrBadKey) {
		t.Fatalf("encrypt with another device's key: got %v", err)
	}
	if _, err := s.Encrypt(alice.keys[0].Signing, make([]byte, MaxMessagePlaintextSize+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized message: got %v", err)
	}
	if s.Sent() != 0 {
		t.Fatal("a refused message advanced the session")
	}
	if _, err := s.Encrypt(alice.keys[0].Signing, make([]byte, MaxMessagePlaintextSize)); err != nil {
		t.Fatalf("largest message: %v", err)
	}
}

func TestSessionOutOfOrderAndReplay(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	r := mustOpen(t, b, alice.set, bob.keys[0])
	var msgs [][]byte
	for i := range 20 {
		msgs = append(msgs, mustEncrypt(t, s, alice.keys[0], fmt.Sprint(i)))
	}
	order := []int{3, 0, 19, 1, 2, 10, 4, 5, 18, 6, 7, 8, 9, 11, 17, 12, 13, 14, 16, 15}
	for _, i := range order {
		pt, err := decryptWith(r, msgs[i])
		if err != nil || string(pt) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q, %v", i, pt, err)
		}
	}
	if len(r.skipped) != 0 {
		t.Fatalf("%d skipped keys kept after every message arrived", len(r.skipped))
	}
	for _, i := range order {
		if _, err := decryptWith(r, msgs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of %d: got %v, want ErrReplay", i, err)
		}
	}
	// The key bundle delivered again does not rewind the session.
	var rs ReceiverSessions
	if !rs.Add(r) {
		t.Fatal("first Add refused")
	}
	if rs.Add(mustOpen(t, b, alice.set, bob.keys[0])) {
		t.Fatal("a replayed key bundle replaced the session state")
	}
	if _, _, err := rs.Decrypt(msgs[0]); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after the bundle came again: got %v, want ErrReplay", err)
	}
}

func TestSessionWindow(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	r := mustOpen(t, b, alice.set, bob.keys[0])
	const W = MaxSkippedMessageKeys
	msgs := make([][]byte, 2*W+10)
	for i := range msgs {
		msgs[i] = mustEncrypt(t, s, alice.keys[0], fmt.Sprint(i))
	}
	// Too far ahead: W counters past the next expected (0).
	if _, err := decryptWith(r, msgs[W]); !errors.Is(err, ErrOutsideWindow) {
		t.Fatalf("message %d with next 0: got %v, want ErrOutsideWindow", W, err)
	}
	// W-1 ahead is fine and keeps W-1 skipped keys.
	if _, err := decryptWith(r, msgs[W-1]); err != nil {
		t.Fatal(err)
	}
	if len(r.skipped) != W-1 {
		t.Fatalf("%d skipped keys, want %d", len(r.skipped), W-1)
	}
	// Advance to 2W+5: keys below next-W are dropped.
	if _, err := decryptWith(r, msgs[W+W/2]); err != nil {
		t.Fatal(err)
	}
	if _, err := decryptWith(r, msgs[2*W+5]); err != nil {
		t.Fatal(err)
	}
	next := uint32(2*W + 6)
	if r.next != next || len(r.skipped) > W || r.skipped[0].n < next-W {
		t.Fatalf("next %d, %d skipped from %d", r.next, len(r.skipped), r.skipped[0].n)
	}
	for _, tt := range []struct {
		i    int
		want error
	}{
		{W - 2, ErrOutsideWindow}, // skipped, then fell out of the window
		{int(next) - W - 1, ErrOutsideWindow},
		{W - 1, ErrOutsideWindow}, // received long ago
		{W + W/2, ErrReplay},      // received, inside the window
		{2*W + 5, ErrReplay},      // the last one received
		{int(next) - W, nil},      // skipped, oldest inside the window
		{2*W + 4, nil},            // skipped, newest
		{2*W + 9, nil},            // ahead
	} {
		_, err := decryptWith(r, msgs[tt.i])
		if !errors.Is(err, tt.want) {
			t.Errorf("message %d: got %v, want %v", tt.i, err, tt.want)
		}
	}
}

// TestMessageTamperEveryByte flips a bit in every byte of a message: each
// copy must be refused, and the receiver must still read the original.
func TestMessageTamperEveryByte(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	var rs ReceiverSessions
	rs.Add(mustOpen(t, b, alice.set, bob.keys[0]))
	msg := mustEncrypt(t, s, alice.keys[0], "attack at dawn")
	m, _ := DecodeMessage(msg)
	ctStart := bytes.Index(msg, m.Ciphertext)
	for pos := range msg {
		bad := bytes.Clone(msg)
		bad[pos] ^= 0x04
		_, _, err := rs.Decrypt(bad)
		if err == nil {
			t.Fatalf("byte %d flipped: message accepted", pos)
		}
		want := []error{ident.ErrMalformed, ident.ErrNonCanonical, ident.ErrBadSignature, ErrUnknownSession}
		if (pos >= ctStart && pos < ctStart+len(m.Ciphertext)) || pos >= len(msg)-ident.SignatureSize {
			want = []error{ident.ErrBadSignature} // ciphertext and signature bytes
		}
		if !slices.ContainsFunc(want, func(e error) bool { return errors.Is(err, e) }) {
			t.Errorf("byte %d flipped: got %v, want one of %v", pos, err, want)
		}
	}
	if _, pt, err := rs.Decrypt(msg); err != nil || string(pt) != "attack at dawn" {
		t.Fatalf("original after tampered copies: %q, %v", pt, err)
	}
}

// TestMessageForgedByMember shows that a recipient, who holds the session
// key, cannot write as the sender, and that a sender's bad ciphertext is
// ErrTampered.
func TestMessageForgedByMember(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	r := mustOpen(t, b, alice.set, bob.keys[0])
	// Bob derives message key 0 from the session key he was given, and
	// encrypts correctly, but can only sign with his own key.
	ck := r.chainKey
	mk := chainStep(&ck)
	forged := Message{Header: MessageHeader{Conversation: r.conversation, Session: r.id, SenderUser: alice.id(), Sender: alice.keys[0].ID(), Counter: 0}}
	forged.Ciphertext = messageAEAD(&mk).Seal(nil, mk[32:], []byte("pay bob"), forged.headerBytes())
	forged.Sig = bob.keys[0].Signing.Sign(ident.DomainMsg, forged.signedBytes())
	if _, err := decryptWith(r, forged.Encode()); !errors.Is(err, ident.ErrBadSignature) {
		t.Fatalf("message forged by a member: got %v, want ErrBadSignature", err)
	}
	// A signed message whose ciphertext does not open.
	m, _ := DecodeMessage(mustEncrypt(t, s, alice.keys[0], "hello"))
	m.Ciphertext = bytes.Clone(m.Ciphertext)
	m.Ciphertext[0] ^= 1
	m.Sig = alice.keys[0].Signing.Sign(ident.DomainMsg, m.signedBytes())
	if _, err := decryptWith(r, m.Encode()); !errors.Is(err, ErrTampered) {
		t.Fatalf("signed bad ciphertext: got %v, want ErrTampered", err)
	}
	if r.next != 0 || len(r.skipped) != 0 {
		t.Fatal("a refused message changed the receiver state")
	}
	// A receiver holding the wrong session key.
	wrong := *r
	wrong.chainKey[0] ^= 1
	if _, err := decryptWith(&wrong, mustEncrypt(t, s, alice.keys[0], "x")); !errors.Is(err, ErrTampered) {
		t.Fatalf("wrong session key: got %v, want ErrTampered", err)
	}
}

// TestForwardSecrecy serializes a receiver after message n and shows that
// the state cannot decrypt messages up to n: it holds none of their keys,
// nor any chain key they came from.
func TestForwardSecrecy(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	sessionKey := s.chainKey
	r := mustOpen(t, b, alice.set, bob.keys[0])
	const n = 10
	var msgs [][]byte
	for i := range n + 5 {
		msgs = append(msgs, mustEncrypt(t, s, alice.keys[0], fmt.Sprint(i)))
	}
	// Deliver 0..n except 4, which stays skipped.
	for i := 0; i <= n; i++ {
		if i == 4 {
			continue
		}
		if _, err := decryptWith(r, msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	state, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Recompute every chain and message key of the session.
	ck := sessionKey
	var chainKeys [][SessionKeySize]byte
	var msgKeys [][messageKeySize]byte
	for range n + 5 {
		chainKeys = append(chainKeys, ck)
		msgKeys = append(msgKeys, chainStep(&ck))
	}
	for i := 0; i <= n; i++ {
		if bytes.Contains(state, chainKeys[i][:]) {
			t.Errorf("state holds chain key %d", i)
		}
		if i != 4 && (bytes.Contains(state, msgKeys[i][:32]) || bytes.Contains(state, msgKeys[i][32:])) {
			t.Errorf("state holds message key %d", i)
		}
	}
	if !bytes.Contains(state, msgKeys[4][:]) || !bytes.Contains(state, chainKeys[n+1][:]) {
		t.Fatal("state lacks the skipped key or the current chain key")
	}
	stolen, err := UnmarshalReceiverSession(state)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= n; i++ {
		if i == 4 {
			continue
		}
		if _, err := decryptWith(stolen, msgs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("message %d from the stolen state: got %v, want ErrReplay", i, err)
		}
	}
	// What the state does hold still works.
	for _, i := range []int{4, n + 1, n + 4} {
		if pt, err := decryptWith(stolen, msgs[i]); err != nil || string(pt) != fmt.Sprint(i) {
			t.Fatalf("message %d from the restored state: %q, %v", i, pt, err)
		}
	}
	// The sender's state after message n holds no earlier key either.
	sent, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n + 5 {
		if bytes.Contains(sent, chainKeys[i][:]) || bytes.Contains(sent, msgKeys[i][:32]) {
			t.Errorf("sender state holds the keys of message %d", i)
		}
	}
}

func TestSessionStateRoundTrip(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	s, b := directSession(t, alice, bob, testTime(0))
	r := mustOpen(t, b, alice.set, bob.keys[0])
	var msgs [][]byte
	for i := range 6 {
		msgs = append(msgs, mustEncrypt(t, s, alice.keys[0], fmt.Sprint(i)))
	}
	for _, i := range []int{0, 3} {
		if _, err := decryptWith(r, msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Receiver: encode, decode, encode again gives the same bytes.
	enc, _ := r.MarshalBinary()
	r2, err := UnmarshalReceiverSession(enc)
	if err != nil {
		t.Fatal(err)
	}
	if enc2, _ := r2.MarshalBinary(); !bytes.Equal(enc, enc2) {
		t.Fatal("receiver state does not round trip")
	}
	if r2.ID() != s.ID() || !r2.Sender().Equal(alice.keys[0].ID()) || !r2.SenderUser().Equal(alice.id()) || !r2.Created().Equal(testTime(0)) {
		t.Fatal("receiver state fields differ")
	}
	// Sender: restored, it continues the chain.
	senc, _ := s.MarshalBinary()
	s2, err := UnmarshalSenderSession(senc)
	if err != nil {
		t.Fatal(err)
	}
	if senc2, _ := s2.MarshalBinary(); !bytes.Equal(senc, senc2) {
		t.Fatal("sender session does not round trip")
	}
	next := mustEncrypt(t, s2, alice.keys[0], "after restore")
	for _, i := range []int{1, 2, 4, 5} {
		if _, err := decryptWith(r2, msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if pt, err := decryptWith(r2, next); err != nil || string(pt) != "after restore" {
		t.Fatalf("%q, %v", pt, err)
	}
	if _, err := decryptWith(r2, msgs[3]); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after restore: %v", err)
	}
	if s := fmt.Sprint(r2, s2); bytes.Contains([]byte(s), r2.chainKey[:8]) {
		t.Fatal("String printed key material")
	}
}

func TestUnmarshalReceiverSessionRejects(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 1), newMsgUser(t, "bob", 1)
	_, b := directSession(t, alice, bob, testTime(0))
	r := mustOpen(t, b, alice.set, bob.keys[0])
	r.next = 10
	r.skipped = []skippedKey{{n: 2}, {n: 5}}
	good, _ := r.MarshalBinary()
	if _, err := UnmarshalReceiverSession(good); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(r *ReceiverSession)) []byte {
		c := *r
		c.skipped = slices.Clone(r.skipped)
		f(&c)
		b, _ := c.MarshalBinary()
		return b
	}
	for name, data := range map[string][]byte{
		"unsorted":           mutate(func(r *ReceiverSession) { r.skipped[0].n = 7 }),
		"repeated":           mutate(func(r *ReceiverSession) { r.skipped[1].n = 2 }),
		"not behind next":    mutate(func(r *ReceiverSession) { r.skipped[1].n = 10 }),
		"outside the window": mutate(func(r *ReceiverSession) { r.next = MaxSkippedMessageKeys + 3 }),
		"truncated":          good[:len(good)-1],
		"trailing":           append(bytes.Clone(good), 0),
		"empty":              nil,
	} {
		if _, err := UnmarshalReceiverSession(data); !errors.Is(err, ident.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestRenewalPolicy(t *testing.T) {
	alice, bob := newMsgUser(t, "alice", 2), newMsgUser(t, "bob", 1)
	start := testTime(0)
	s, _ := directSession(t, alice, bob, start)
	p := DefaultRenewalPolicy()
	fp := FingerprintParticipants(sets(alice, bob))
	if fp != FingerprintParticipants(sets(bob, alice, bob)) {
		t.Fatal("fingerprint depends on order or repeats")
	}
	if p.NeedsRenewal(s, start, fp) {
		t.Fatal("new session needs renewal")
	}
	for range 99 {
		mustEncrypt(t, s, alice.keys[0], "x")
	}
	if p.NeedsRenewal(s, start.Add(7*24*time.Hour-time.Millisecond), fp) {
		t.Fatal("renewal after 99 messages, just under 7 days")
	}
	if !p.NeedsRenewal(s, start.Add(7*24*time.Hour), fp) {
		t.Fatal("no renewal after 7 days")
	}
	mustEncrypt(t, s, alice.keys[0], "x")
	if !p.NeedsRenewal(s, start, fp) {
		t.Fatal("no renewal after 100 messages")
	}
	custom := RenewalPolicy{MaxMessages: 1000, MaxAge: time.Hour}
	if custom.NeedsRenewal(s, start.Add(59*time.Minute), fp) || !custom.NeedsRenewal(s, start.Add(time.Hour), fp) {
		t.Fatal("custom policy")
	}
	// Any change of the participants' devices: added, revoked, or a member more.
	s, _ = directSession(t, alice, bob, start)
	bob.addDevice(t)
	if !p.NeedsRenewal(s, start, FingerprintParticipants(sets(alice, bob))) {
		t.Fatal("no renewal after bob added a device")
	}
	s, _ = directSession(t, alice, bob, start)
	alice.revoke(t, 1)
	if !p.NeedsRenewal(s, start, FingerprintParticipants(sets(alice, bob))) {
		t.Fatal("no renewal after alice revoked a device")
	}
	s, _ = directSession(t, alice, bob, start)
	if !p.NeedsRenewal(s, start, FingerprintParticipants(sets(alice, bob, newMsgUser(t, "carol", 1)))) {
		t.Fatal("no renewal after a participant joined")
	}
	if _, err := NewKeyBundle(s, alice.keys[0], sets(alice)); !errors.Is(err, ErrParticipantsChanged) {
		t.Fatalf("bundle for other participants: got %v", err)
	}
}

func TestIDText(t *testing.T) {
	sid := SessionID{1, 2, 3}
	got, err := ParseSessionID(sid.String())
	if err != nil || got != sid {
		t.Fatalf("session ID round trip: %v %v", got, err)
	}
	cid, _ := NewConversationID(detRand("conversation"))
	gotc, err := ParseConversationID(cid.String())
	if err != nil || gotc != cid {
		t.Fatalf("conversation ID round trip: %v %v", gotc, err)
	}
	for _, bad := range []string{"", sid.String()[:10], "A" + sid.String()[1:], sid.String() + "a", cid.String() + "aa"} {
		if _, err := ParseSessionID(bad); !errors.Is(err, ident.ErrBadID) {
			t.Errorf("ParseSessionID(%q): %v", bad, err)
		}
	}
	a, b := newMsgUser(t, "alice", 1).id(), newMsgUser(t, "bob", 1).id()
	if DirectConversationID(a, b) != DirectConversationID(b, a) || DirectConversationID(a, b) == DirectConversationID(a, a) {
		t.Fatal("DirectConversationID")
	}
}

func BenchmarkMessageEncrypt(b *testing.B) {
	alice, bob := newMsgUser(b, "alice", 1), newMsgUser(b, "bob", 1)
	pt := make([]byte, 1024)
	s, _ := directSession(b, alice, bob, testTime(0))
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := s.Encrypt(alice.keys[0].Signing, pt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkMessageDecrypt decodes, verifies and decrypts 1 KiB messages
// from their wire form, in order.
func BenchmarkMessageDecrypt(b *testing.B) {
	alice, bob := newMsgUser(b, "alice", 1), newMsgUser(b, "bob", 1)
	s, bundle := directSession(b, alice, bob, testTime(0))
	const n = 4096
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = mustEncrypt(b, s, alice.keys[0], string(make([]byte, 1024)))
	}
	start := mustOpen(b, bundle, alice.set, bob.keys[0])
	var r ReceiverSession
	b.SetBytes(1024)
	i := 0
	for b.Loop() {
		if i%n == 0 {
			r = *start
		}
		if _, err := decryptWith(&r, msgs[i%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
