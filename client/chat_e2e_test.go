package client

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
)

// inbox collects the messages a chat reports.
type inbox struct {
	mu   sync.Mutex
	msgs []ChatMessage
	more chan struct{}
}

func newInbox(ch *Chat) *inbox {
	in := &inbox{more: make(chan struct{}, 1)}
	ch.OnMessage(func(m ChatMessage) {
		in.mu.Lock()
		in.msgs = append(in.msgs, m)
		in.mu.Unlock()
		select {
		case in.more <- struct{}{}:
		default:
		}
	})
	return in
}

// wait returns once n messages came.
func (in *inbox) wait(t *testing.T, n int) []ChatMessage {
	t.Helper()
	deadline := time.After(e2eTimeout)
	for {
		in.mu.Lock()
		got := append([]ChatMessage(nil), in.msgs...)
		in.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-in.more:
		case <-deadline:
			t.Fatalf("%d messages came, want %d", len(got), n)
		}
	}
}

// running opens a chat on c and runs it until the test (or stop) ends.
func running(t *testing.T, c *Client, pass []byte) (*Chat, *inbox, func()) {
	t.Helper()
	ch, err := c.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	in := newInbox(ch)
	ch.SetLogger(slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); ch.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			ch.Close()
		})
	}
	t.Cleanup(stop)
	ctx2, cancel2 := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel2()
	if _, err := ch.currentConn(ctx2); err != nil {
		t.Fatal(err)
	}
	return ch, in, stop
}

func mustSend(t *testing.T, ch *Chat, peer ident.UserID, text string, wantDevices int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	rep, err := ch.Send(ctx, peer, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	if rep.Devices != wantDevices {
		t.Fatalf("send %q stored for %d devices, want %d", text, rep.Devices, wantDevices)
	}
}

func register(t *testing.T, url string, pass []byte) (*Client, Identity) {
	t.Helper()
	c := newTestClient(t, url, nil)
	id, err := c.Register(t.Context(), "", nil, pass)
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

// Alice on node 0 and Bob on node 2 chat both ways; Bob goes offline,
// Alice sends 1,000 messages, node 2 (one of Bob's relays, and his node)
// crashes, Bob comes back through node 1 and gets all 1,000, in order,
// decrypted, exactly once; his history survives reopening the store.
func TestChatOfflineDeliveryAcrossNodes(t *testing.T) {
	nw := testnet.New(t, 3)
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, idA := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[2].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob on node 0", func(UserInfo) bool { return true })
	waitUser(t, bob, idA.User, "alice on node 2", func(UserInfo) bool { return true })

	chA, inA, _ := running(t, alice, passA)
	chB, inB, stopB := running(t, bob, passB)
	mustSend(t, chA, idB.User, "hello bob", 1)
	if got := inB.wait(t, 1); got[0].Text != "hello bob" || !got[0].From.Equal(idA.User) || got[0].Outgoing {
		t.Fatalf("bob got %+v", got[0])
	}
	mustSend(t, chB, idA.User, "hello alice", 1)
	if got := inA.wait(t, 1); got[0].Text != "hello alice" || !got[0].Peer.Equal(idB.User) {
		t.Fatalf("alice got %+v", got[0])
	}
	stopB()

	const n = 1000
	ctx, cancel := context.WithTimeout(t.Context(), 5*e2eTimeout)
	defer cancel()
	var waits []func(context.Context) (SendReport, error)
	for i := range n {
		w, _, err := chA.SendAsync(ctx, idB.User, fmt.Sprintf("offline %04d", i))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	for i, w := range waits {
		if rep, err := w(ctx); err != nil || rep.Devices != 1 {
			t.Fatalf("message %d: %+v %v", i, rep, err)
		}
	}
	nw.HardStop(2)

	bob2, err := New(Options{Home: bob.Home().Dir(), Node: nw.Nodes[1].APIURL(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	chB2, inB2, stopB2 := running(t, bob2, passB)
	got := inB2.wait(t, n)
	for i, m := range got[:n] {
		if want := fmt.Sprintf("offline %04d", i); m.Text != want || !m.From.Equal(idA.User) {
			t.Fatalf("message %d is %q from %s, want %q", i, m.Text, m.From, want)
		}
	}
	hist := chB2.History(idA.User)
	if len(hist) != n+2 {
		t.Fatalf("bob's history holds %d messages, want %d", len(hist), n+2)
	}
	stopB2()
	if len(inB2.msgs) != n {
		t.Fatalf("bob was shown %d messages, want %d (exactly once)", len(inB2.msgs), n)
	}
	// Reopened from the encrypted store: the same history.
	again, err := bob2.OpenChat(passB)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if h := again.History(idA.User); len(h) != n+2 || h[0].Text != "hello bob" || h[1].Text != "hello alice" || h[n+1].Text != fmt.Sprintf("offline %04d", n-1) {
		t.Fatalf("reopened history: %d messages", len(h))
	}
}

// A message sent from Alice's device 1 shows up on her device 2 (linked
// through another node) as her own outgoing message, and on Bob's device.
func TestChatOwnOtherDevice(t *testing.T) {
	nw := testnet.New(t, 2)
	passA, passA2, passB := []byte("a1"), []byte("a2"), []byte("b")
	alice, idA := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[1].APIURL(), passB)
	alice2 := newTestClient(t, nw.Nodes[1].APIURL(), nil)
	link(t, alice, passA, alice2, passA2)
	waitUser(t, alice, idB.User, "bob on node 0", func(UserInfo) bool { return true })
	waitUser(t, bob, idA.User, "alice's two devices on node 1", func(i UserInfo) bool { return len(i.Devices) == 2 })

	chA, _, _ := running(t, alice, passA)
	_, inA2, _ := running(t, alice2, passA2)
	_, inB, _ := running(t, bob, passB)
	mustSend(t, chA, idB.User, "from device 1", 2)
	m := inA2.wait(t, 1)[0]
	if m.Text != "from device 1" || !m.Outgoing || !m.Peer.Equal(idB.User) || !m.Device.Equal(idA.Device) {
		t.Fatalf("alice's device 2 got %+v", m)
	}
	if b := inB.wait(t, 1)[0]; b.Text != "from device 1" || b.Outgoing {
		t.Fatalf("bob got %+v", b)
	}
}

// Canary: a message's plaintext never reaches a node's data directory or
// logs; the recipient reads it, which shows it was sent.
func TestChatCanaryNeverOnNodes(t *testing.T) {
	logs := &syncWriter{}
	nodes, dirs := canaryNodes(t, logs)
	passA, passB := []byte("pa"), []byte("pb")
	alice, _ := register(t, nodes[0].APIURL(), passA)
	bob, idB := register(t, nodes[1].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob on node 0", func(UserInfo) bool { return true })
	chA, _, stopA := running(t, alice, passA)
	_, inB, stopB := running(t, bob, passB)
	const canary = "canary-plaintext-5b1e07c4d2"
	mustSend(t, chA, idB.User, canary, 1)
	// Bob has the first one before he goes offline.
	if m := inB.wait(t, 1)[0]; m.Text != canary {
		t.Fatalf("bob got %q", m.Text)
	}
	// Bob offline: this one waits on the relays (on disk) when the nodes stop.
	stopB()
	const canary2 = "canary-plaintext-offline-9f3a61"
	mustSend(t, chA, idB.User, canary2, 1)
	stopA()
	for _, nd := range nodes {
		if err := nd.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	secrets := map[string][]byte{"canary": []byte(canary), "offline canary": []byte(canary2)}
	if found := findIn(logs.Bytes(), secrets); len(found) > 0 {
		t.Errorf("node logs hold %v", found)
	}
	for _, dir := range dirs {
		if found := grepDir(t, dir, secrets); len(found) > 0 {
			t.Errorf("node data holds %v", found)
		}
	}
	// The clients' homes are encrypted too.
	for _, c := range []*Client{alice, bob} {
		if found := grepDir(t, c.Home().Dir(), secrets); len(found) > 0 {
			t.Errorf("home holds %v", found)
		}
	}
	// Positive control: the search finds the text in the opened history.
	reopened, err := bob.OpenChat(passB)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if h := reopened.History(alice.mustUser(t)); len(h) == 0 || h[0].Text != canary {
		t.Fatal("positive control: bob's history lacks the canary")
	}
}

func (c *Client) mustUser(t *testing.T) ident.UserID {
	id, _, err := c.Whoami()
	if err != nil {
		t.Fatal(err)
	}
	return id.User
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
