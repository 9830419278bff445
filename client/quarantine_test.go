package client

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/wire"
)

// Messages whose key bundle never comes stay on the relays only until
// QuarantineAfter: the next delivery then acknowledges them and the device
// keeps them in memory, so they do not fill its mailbox forever.
func TestChatQuarantinesMessagesItCannotUseYet(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	pass := []byte("bob pass")
	bob, id := register(t, url, pass)
	ch, err := bob.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	own, err := ch.chain(t.Context(), id.User, 0)
	if err != nil {
		t.Fatal(err)
	}
	to, _ := own.Lookup(id.Device)

	// A stranger's session whose bundle Bob never gets.
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	peer, _, err := ident.DecodeChain(g.UserID(), [][]byte{g.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e2ee.NewSenderSession(keys, peer.User(), e2ee.DirectConversationID(peer.User(), id.User), []ident.DeviceSet{peer, own}, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var envs []wire.Envelope
	for i := range 3 {
		pt, err := storeEnc.Marshal(chatPayload{To: id.User.Bytes(), Seq: uint64(i), Sent: time.Now().UnixMilli(), Text: "waiting"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Encrypt(keys.Signing, pt)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := e2ee.SealEnvelope(to, e2ee.EnvelopeMessage, peer.User(), m)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, wire.Envelope{To: id.Device, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: wire.DefaultTTL, Ciphertext: ct})
	}
	conn, err := Dial(t.Context(), url, bob.hc, id.User, ch.keys, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	res, err := conn.Send(t.Context(), envs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if err := resultError(r); err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
	}
	pending := func() int {
		n, err := nw.Nodes[0].Relay().Local().Count(id.Device)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Within QuarantineAfter: held, and left on the relay.
	if err := ch.receive(t.Context(), conn, envs, nil); err != nil {
		t.Fatal(err)
	}
	if n := pending(); n != len(envs) {
		t.Fatalf("%d envelopes on the relay, want %d", n, len(envs))
	}
	// Past it (the orphans were held at the last delivery): acknowledged
	// at the next delivery, also when the relay pushes them again, and
	// still held.
	old := QuarantineAfter
	QuarantineAfter = 0
	t.Cleanup(func() { QuarantineAfter = old })
	if err := ch.receive(t.Context(), conn, envs[:1], nil); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, e2eTimeout, func() error {
		if n := pending(); n != 0 {
			return fmt.Errorf("%d envelopes still on the relay", n)
		}
		return nil
	})
	ch.mu.Lock()
	held := len(ch.orphans)
	ch.mu.Unlock()
	if held != len(envs) {
		t.Fatalf("%d orphans held after the quarantine, want %d", held, len(envs))
	}
}
