package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// A contact's messages carry the recipient device's delivery key, learnt
// from the recipient's own messages, and pass the small quota for message
// requests; a stranger's are bounded by it. Bob is offline while both
// write to him; he then gets every message of Alice's.
func TestChatContactsPassTheRequestsQuota(t *testing.T) {
	const requests = 4
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) { cfg.Relay.RequestsCap = requests }))
	url := nw.Nodes[0].APIURL()
	passA, passB, passC := []byte("alice pass"), []byte("bob pass"), []byte("carol pass")
	alice, idA := register(t, url, passA)
	bob, idB := register(t, url, passB)
	carol, _ := register(t, url, passC)
	waitUser(t, alice, idB.User, "bob", func(UserInfo) bool { return true })
	waitUser(t, bob, idA.User, "alice", func(UserInfo) bool { return true })
	waitUser(t, carol, idB.User, "bob", func(UserInfo) bool { return true })

	chA, inA, _ := running(t, alice, passA)
	chB, inB, stopB := running(t, bob, passB)
	chC, _, _ := running(t, carol, passC)
	mustSend(t, chA, idB.User, "hi bob", 1)
	inB.wait(t, 1)
	mustSend(t, chB, idA.User, "hi alice", 1)
	inA.wait(t, 1)
	chA.mu.Lock()
	_, known := chA.st.delivery[idB.Device]
	chA.mu.Unlock()
	if !known {
		t.Fatal("alice did not learn bob's delivery key from his message")
	}
	stopB()

	// Alice, a contact: far more than the requests quota is stored.
	const many = 3 * requests
	for i := range many {
		mustSend(t, chA, idB.User, fmt.Sprintf("from alice %d", i), 1)
	}
	// Carol, a stranger: refused once the quota is used.
	refused := false
	for i := range requests + 1 {
		ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
		_, err := chC.Send(ctx, idB.User, fmt.Sprintf("from carol %d", i))
		cancel()
		if errors.Is(err, wire.ErrRequestsFull) {
			refused = true
			break
		}
		if err != nil {
			t.Fatalf("carol's message %d: %v", i, err)
		}
	}
	if !refused {
		t.Fatalf("%d messages of a stranger were all stored, quota %d envelopes", requests+1, requests)
	}

	// Bob comes back and gets all of Alice's.
	_, inB2, _ := running(t, bob, passB)
	deadline := time.After(e2eTimeout)
	for {
		inB2.mu.Lock()
		fromAlice := 0
		for _, m := range inB2.msgs {
			if m.From.Equal(idA.User) {
				fromAlice++
			}
		}
		inB2.mu.Unlock()
		if fromAlice == many {
			return
		}
		select {
		case <-inB2.more:
		case <-deadline:
			t.Fatalf("bob got %d of alice's %d messages", fromAlice, many)
		}
	}
}
