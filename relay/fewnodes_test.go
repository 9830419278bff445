package relay_test

import (
	"fmt"
	"testing"
)

// On a network with fewer relay nodes than k (replicas 3, write quorum 2),
// an envelope is stored on every relay node there is, and the result says
// on how many of how many: 1 of 1 on a node alone, 2 of 2 on two.
func TestSendOnFewerRelaysThanReplicas(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			nw := relayNet(t, n, 3, 2, nil)
			res, err := nw.Nodes[0].Relay().Send(t.Context(), envelopes(deviceKeys(t).ID(), 2, "few"))
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Err != nil || r.Relays != n || r.Stored != n {
					t.Fatalf("envelope %d: stored on %d of %d relays, %v; want %d of %d", i, r.Stored, r.Relays, r.Err, n, n)
				}
			}
		})
	}
}
