package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
)

// handlerCount is how many OnMessage functions the chat calls.
func (ch *Chat) handlerCount() int {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	return len(ch.handlers)
}

// A chat survives Connect twice and Connect then Run: no panic, the second
// Connect keeps the live connection, Run takes over and delivers both ways.
func TestChatConnectTwiceThenRun(t *testing.T) {
	nw := testnet.New(t, 2)
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, _ := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[0].APIURL(), passB)
	waitUser(t, alice, idB.User, "bob", func(UserInfo) bool { return true })
	chB, inB, _ := running(t, bob, passB)

	chA, err := alice.OpenChat(passA)
	if err != nil {
		t.Fatal(err)
	}
	defer chA.Close()
	inA := newInbox(chA)
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	if err := chA.Connect(ctx); err != nil {
		t.Fatalf("first Connect: %v", err)
	}
	first, err := chA.currentConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chA.Connect(ctx); err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	if again, err := chA.currentConn(ctx); err != nil || again != first {
		t.Fatalf("second Connect replaced the live connection (%v)", err)
	}
	mustSend(t, chA, idB.User, "after two connects", 1)
	if got := inB.wait(t, 1); got[0].Text != "after two connects" {
		t.Fatalf("bob got %q", got[0].Text)
	}

	runCtx, stopRun := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- chA.Run(runCtx) }()
	defer func() {
		stopRun()
		<-done
	}()
	// Run's receiving connection replaces the one of Connect.
	tstest.WaitFor(t, e2eTimeout, func() error {
		conn, err := chA.currentConn(ctx)
		if err != nil {
			return err
		}
		if conn == first {
			return errors.New("Run has not taken over the connection of Connect")
		}
		return nil
	})
	if first.Err() == nil {
		t.Error("the connection of Connect is still open after Run replaced it")
	}
	mustSend(t, chA, idB.User, "while running", 1)
	if got := inB.wait(t, 2); got[1].Text != "while running" {
		t.Fatalf("bob got %q", got[1].Text)
	}
	mustSend(t, chB, alice.mustUser(t), "to alice", 1)
	if got := inA.wait(t, 1); got[0].Text != "to alice" {
		t.Fatalf("alice got %q", got[0].Text)
	}
	// A second Run beside the first is refused rather than fighting it for
	// the connection.
	if err := chA.Run(ctx); err == nil {
		t.Fatal("a second concurrent Run did not fail")
	}
}

// Fetch returns what came and leaves no handler behind: the functions of
// OnMessage are the caller's only.
func TestChatFetchLeavesNoHandler(t *testing.T) {
	nw := testnet.New(t, 2)
	passA, passB := []byte("alice pass"), []byte("bob pass")
	alice, idA := register(t, nw.Nodes[0].APIURL(), passA)
	bob, idB := register(t, nw.Nodes[0].APIURL(), passB)
	waitUser(t, bob, idA.User, "alice", func(UserInfo) bool { return true })
	waitUser(t, alice, idB.User, "bob", func(UserInfo) bool { return true })

	chA, err := alice.OpenChat(passA)
	if err != nil {
		t.Fatal(err)
	}
	defer chA.Close()
	inA := newInbox(chA)
	chB, err := bob.OpenChat(passB)
	if err != nil {
		t.Fatal(err)
	}
	defer chB.Close()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	if err := chB.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	const fetches = 3
	var got []ChatMessage
	for i := range fetches {
		mustSend(t, chB, idA.User, "fetch me", 1)
		// Fetch until the message is in: delivery to the live session is
		// not instantaneous.
		tstest.WaitFor(t, e2eTimeout, func() error {
			msgs, err := chA.Fetch(ctx, 200*time.Millisecond)
			if err != nil {
				t.Fatalf("fetch %d: %v", i, err)
			}
			got = append(got, msgs...)
			if len(got) <= i {
				return fmt.Errorf("fetch %d: %d messages so far", i, len(got))
			}
			return nil
		})
	}
	if len(got) != fetches {
		t.Fatalf("Fetch returned %d messages, want %d", len(got), fetches)
	}
	if n := chA.handlerCount(); n != 1 {
		t.Fatalf("after the Fetch calls the chat has %d handlers, want 1 (the inbox's)", n)
	}
	if n := len(inA.wait(t, fetches)); n != fetches {
		t.Fatalf("OnMessage saw %d messages, want %d", n, fetches)
	}
}
