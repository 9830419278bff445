package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
)

// statusOf returns the state of this device's message seq to peer.
func statusOf(ch *Chat, peer ident.UserID, text string) (MessageState, bool) {
	for _, m := range ch.History(peer) {
		if m.Outgoing && m.Text == text {
			return m.State, true
		}
	}
	return 0, false
}

// waitState waits until every text of this device to peer is in state want.
func waitState(t *testing.T, ch *Chat, peer ident.UserID, want MessageState, texts ...string) {
	t.Helper()
	tstest.WaitFor(t, e2eTimeout, func() error {
		for _, text := range texts {
			if s, ok := statusOf(ch, peer, text); !ok || s != want {
				return fmt.Errorf("message %q is %s, want %s", text, s, want)
			}
		}
		return nil
	})
}

// Lines queued while the node is down are kept (pending, in history),
// sent when it is back, received once each, in order, and marked
// delivered by the recipient's receipts; a chat reopened with pending
// messages sends them.
func TestOutboxAcrossNodeRestart(t *testing.T) {
	nw := testnet.New(t, 2)
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, _ := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[1].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob on node 0", func(UserInfo) bool { return true })
	chB, inB, _ := running(t, bob, passB)

	chA, _, stopA := running(t, alice, passA)
	var events []ConnEvent
	evCh := make(chan ConnEvent, 16)
	chA.OnConnection(func(ev ConnEvent) { evCh <- ev })
	mustSend(t, chA, idB.User, "before the restart", 1)
	inB.wait(t, 1)
	waitState(t, chA, idB.User, StateDelivered, "before the restart")

	nw.Stop(0)
	ev := <-evCh
	events = append(events, ev)
	if ev.Connected || ev.Err == nil {
		t.Fatalf("after the node stopped: %+v", ev)
	}
	lines := []string{"one", "two", "three"}
	for _, l := range lines {
		m, err := chA.Queue(idB.User, l)
		if err != nil || m.State != StatePending {
			t.Fatalf("queue %q: %+v %v", l, m, err)
		}
	}
	if p := chA.Pending(); len(p) != 3 {
		t.Fatalf("%d pending, want 3", len(p))
	}
	if _, err := chA.Queue(idB.User, " \n\t"); !errors.Is(err, ErrEmptyText) {
		t.Fatalf("queue white space: %v, want ErrEmptyText", err)
	}

	nw.Restart(0)
	for ev := range evCh {
		if ev.Connected {
			break
		}
	}
	got := inB.wait(t, 4)
	for i, l := range lines {
		if got[1+i].Text != l {
			t.Fatalf("bob got %q as message %d, want %q", got[1+i].Text, 1+i, l)
		}
	}
	waitState(t, chA, idB.User, StateDelivered, lines...)
	if p := chA.Pending(); len(p) != 0 {
		t.Fatalf("%d pending after delivery", len(p))
	}

	// Queued with no connection at all, then the chat closed: the next
	// run of the store sends it.
	stopA()
	chA2, err := alice.OpenChat(passA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chA2.Queue(idB.User, "queued before a restart"); err != nil {
		t.Fatal(err)
	}
	chA2.Close()
	chA3, _, _ := running(t, alice, passA)
	if got := inB.wait(t, 5); got[4].Text != "queued before a restart" {
		t.Fatalf("bob got %q", got[4].Text)
	}
	waitState(t, chA3, idB.User, StateDelivered, "queued before a restart")
	if h := chB.History(chA3.Self().User); len(h) != 5 {
		t.Fatalf("bob's history has %d messages, want 5 (each once)", len(h))
	}
}

// What a device receives is unseen until marked, whichever command
// fetched it; marks survive reopening; the conversation list puts the
// newest conversation first with its unseen count.
func TestUnseenAcrossConversations(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	passA, passB, passC := []byte("alice pass"), []byte("bob pass"), []byte("carol pass")
	alice, idA := register(t, url, passA)
	bob, idB := register(t, url, passB)
	carol, idC := register(t, url, passC)
	waitUser(t, bob, idA.User, "alice", func(UserInfo) bool { return true })
	waitUser(t, carol, idA.User, "alice", func(UserInfo) bool { return true })
	chB, _, _ := running(t, bob, passB)
	chC, _, _ := running(t, carol, passC)
	mustSend(t, chB, idA.User, "from bob", 1)
	mustSend(t, chC, idA.User, "from carol 1", 1)
	mustSend(t, chC, idA.User, "from carol 2", 1)

	chA, err := alice.OpenChat(passA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	tstest.WaitFor(t, e2eTimeout, func() error {
		if _, err := chA.Fetch(ctx, 100*time.Millisecond); err != nil {
			return err
		}
		if n := len(chA.Unseen()); n != 3 {
			return fmt.Errorf("%d unseen, want 3", n)
		}
		return nil
	})
	unseen := chA.Unseen()
	var fromBob []ChatMessage
	for i, m := range unseen {
		if i > 0 && m.Local <= unseen[i-1].Local {
			t.Fatalf("unseen out of arrival order: %+v", unseen)
		}
		if m.From.Equal(idB.User) {
			fromBob = append(fromBob, m)
		}
	}
	if len(fromBob) != 1 || fromBob[0].Text != "from bob" {
		t.Fatalf("unseen: %+v", unseen)
	}
	newest := idB.User
	if unseen[2].From.Equal(idC.User) {
		newest = idC.User
	}
	list := chA.ConversationList()
	if len(list) != 2 || !list[0].Peer.Equal(newest) {
		t.Fatalf("conversations, want %s first: %+v", newest, list)
	}
	for _, c := range list {
		if want := map[bool]int{true: 1, false: 2}[c.Peer.Equal(idB.User)]; c.Unseen != want || c.Messages != want {
			t.Fatalf("conversation with %s: %+v", c.Peer, c)
		}
	}
	if err := chA.MarkSeen(fromBob...); err != nil {
		t.Fatal(err)
	}
	chA.Close()

	chA, err = alice.OpenChat(passA)
	if err != nil {
		t.Fatal(err)
	}
	defer chA.Close()
	if u := chA.Unseen(); len(u) != 2 || u[0].Text != "from carol 1" || u[1].Text != "from carol 2" {
		t.Fatalf("unseen after reopening: %+v", u)
	}
	// Alice answers Bob: his conversation is the newest again.
	if _, err := chA.Queue(idB.User, "answer"); err != nil {
		t.Fatal(err)
	}
	if list := chA.ConversationList(); !list[0].Peer.Equal(idB.User) || list[0].Pending != 1 || list[0].Unseen != 0 {
		t.Fatalf("conversations after answering: %+v", list)
	}
}

// One program at a time opens a device's chat: a second OpenChat is
// refused while the first is open, and works once it is closed.
func TestChatOpenTwiceRefused(t *testing.T) {
	nw := testnet.New(t, 1)
	pass := []byte("alice pass")
	alice, _ := register(t, nw.Nodes[0].APIURL(), pass)
	ch, err := alice.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.OpenChat(pass); !errors.Is(err, ErrChatInUse) {
		t.Fatalf("second OpenChat: %v, want ErrChatInUse", err)
	}
	ch.Close()
	ch2, err := alice.OpenChat(pass)
	if err != nil {
		t.Fatalf("OpenChat after Close: %v", err)
	}
	ch2.Close()
}

// A newer session of the device (the same keys elsewhere) takes the
// node's session over: Run stops with ErrSuperseded instead of fighting
// for it, and tells OnConnection.
func TestRunStopsWhenSuperseded(t *testing.T) {
	nw := testnet.New(t, 1)
	pass := []byte("alice pass")
	alice, idA := register(t, nw.Nodes[0].APIURL(), pass)
	ch, err := alice.OpenChat(pass)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	evs := make(chan ConnEvent, 8)
	ch.OnConnection(func(ev ConnEvent) { evs <- ev })
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	go func() { done <- ch.Run(ctx) }()
	if ev := <-evs; !ev.Connected {
		t.Fatalf("first event: %+v", ev)
	}
	other, err := Dial(ctx, nw.Nodes[0].APIURL(), nil, idA.User, ch.keys, true)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := <-done; !errors.Is(err, ErrSuperseded) {
		t.Fatalf("Run ended with %v, want ErrSuperseded", err)
	}
	if ev := <-evs; ev.Connected || !errors.Is(ev.Err, ErrSuperseded) {
		t.Fatalf("last event: %+v", ev)
	}
}

// Messages of the largest size and empty ones: the largest is sent and
// received whole; one byte more, white space and invalid UTF-8 are
// refused before anything is stored.
func TestMessageSizeLimits(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, _ := register(t, url, passA)
	bob, idB := register(t, url, passB)
	waitUser(t, alice, idB.User, "bob", func(UserInfo) bool { return true })
	_, inB, _ := running(t, bob, passB)
	chA, _, _ := running(t, alice, passA)
	big := make([]byte, MaxTextSize)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	mustSend(t, chA, idB.User, string(big), 1)
	if got := inB.wait(t, 1); got[0].Text != string(big) {
		t.Fatalf("bob got %d bytes, want %d", len(got[0].Text), len(big))
	}
	for _, bad := range []struct {
		text string
		want error
	}{
		{string(big) + "b", ErrTextTooLarge},
		{"", ErrEmptyText},
		{"  \n", ErrEmptyText},
		{"\xff\xfe", ErrNotUTF8},
	} {
		if _, err := chA.Send(t.Context(), idB.User, bad.text); !errors.Is(err, bad.want) {
			t.Fatalf("send of %d bytes: %v, want %v", len(bad.text), err, bad.want)
		}
	}
	if h := chA.History(idB.User); len(h) != 1 {
		t.Fatalf("alice's history has %d messages, want 1", len(h))
	}
}
