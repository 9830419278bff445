package p2p_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/node"
)

// testValidator accepts values that start with "ok:" and prefers the
// greatest value.
type testValidator struct{}

func (testValidator) Validate(key string, value []byte) error {
	if !bytes.HasPrefix(value, []byte("ok:")) {
		return errors.New("test record must start with ok:")
	}
	return nil
}

func (testValidator) Select(key string, values [][]byte) (int, error) {
	best := 0
	for i, v := range values {
		if bytes.Compare(v, values[best]) > 0 {
			best = i
		}
	}
	return best, nil
}

const (
	testNamespace = "volo-test"
	testProtocol  = "/volo/test-role/1.0.0"
)

// tenNodes starts the 10-node network of these tests: every node validates
// the test namespace; even nodes serve the test role.
func tenNodes(t testing.TB) *testnet.Network {
	return testnet.New(t, 10, testnet.BeforeStart(func(i int, n *node.Node) {
		if err := n.Host().Validators().Add(testNamespace, testValidator{}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			err := n.Host().Handle("test-role", testProtocol, func(s network.Stream) { s.Close() })
			if err != nil {
				t.Fatal(err)
			}
		}
	}))
}

func TestTenNodes(t *testing.T) {
	nw := tenNodes(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("routing tables", func(t *testing.T) {
		for i, n := range nw.Nodes {
			if got := n.Host().RoutingTableSize(); got != 9 {
				t.Errorf("node %d: routing table has %d peers, want 9", i, got)
			}
		}
	})

	t.Run("valid record put on one node is read on another", func(t *testing.T) {
		key := "/" + testNamespace + "/alice"
		if err := nw.Nodes[3].Host().DHT().PutValue(ctx, key, []byte("ok:1")); err != nil {
			t.Fatalf("put: %v", err)
		}
		for _, i := range []int{0, 7, 9} {
			got, err := nw.Nodes[i].Host().DHT().GetValue(ctx, key)
			if err != nil || string(got) != "ok:1" {
				t.Errorf("node %d: get = %q, %v; want ok:1", i, got, err)
			}
		}
		// A better record replaces it everywhere it is read.
		if err := nw.Nodes[5].Host().DHT().PutValue(ctx, key, []byte("ok:2")); err != nil {
			t.Fatalf("put newer: %v", err)
		}
		got, err := nw.Nodes[8].Host().DHT().GetValue(ctx, key)
		if err != nil || string(got) != "ok:2" {
			t.Errorf("after update: get = %q, %v; want ok:2", got, err)
		}
	})

	t.Run("invalid record is refused everywhere", func(t *testing.T) {
		key := "/" + testNamespace + "/mallory"
		// The node's own DHT refuses to put it.
		if err := nw.Nodes[2].Host().DHT().PutValue(ctx, key, []byte("forged")); err == nil {
			t.Fatal("node accepted a record its validator rejects")
		}
		// A raw libp2p client that skips validation sends it straight to
		// every node; each must refuse to store it.
		nw.RawPut(ctx, key, []byte("forged"))
		// Control: the same path does deliver a record the nodes accept.
		nw.RawPut(ctx, "/"+testNamespace+"/control", []byte("ok:raw"))
		for i, n := range nw.Nodes {
			if v, err := n.Host().DHT().GetValue(ctx, "/"+testNamespace+"/control"); err != nil || string(v) != "ok:raw" {
				t.Fatalf("node %d: control record = %q, %v: the raw client does not reach the nodes", i, v, err)
			}
		}
		for i, n := range nw.Nodes {
			v, err := n.Host().DHT().GetValue(ctx, key)
			if err == nil {
				t.Errorf("node %d served the rejected record %q", i, v)
			} else if !errors.Is(err, routing.ErrNotFound) {
				t.Errorf("node %d: get: %v, want not found", i, err)
			}
		}
	})

	t.Run("unknown namespace is refused", func(t *testing.T) {
		err := nw.Nodes[1].Host().DHT().PutValue(ctx, "/volo-nope/x", []byte("ok:1"))
		if err == nil {
			t.Fatal("put under a namespace without a validator succeeded")
		}
	})

	t.Run("closest peers agree from every node", func(t *testing.T) {
		for _, key := range []string{"mailbox-a", "mailbox-b", "mailbox-c"} {
			var first []peer.ID
			for i, n := range nw.Nodes {
				got, err := n.Host().ClosestPeers(ctx, []byte(key), 3, testProtocol)
				if err != nil {
					t.Fatalf("node %d: %v", i, err)
				}
				if len(got) != 3 {
					t.Fatalf("node %d: got %d peers, want 3", i, len(got))
				}
				for _, p := range got {
					if idx := indexOf(nw, p); idx%2 != 0 {
						t.Errorf("node %d: peer %d does not speak %s", i, idx, testProtocol)
					}
				}
				if first == nil {
					first = got
				} else if !slices.Equal(first, got) {
					t.Errorf("key %s: node %d says %v, node 0 says %v", key, i, got, first)
				}
			}
			// The answer is the 3 closest by XOR distance among the 5 nodes
			// that speak the protocol.
			want := closestByXOR(nw, key, 3)
			if !slices.Equal(first, want) {
				t.Errorf("key %s: got %v, want %v", key, first, want)
			}
		}
	})
}

func indexOf(nw *testnet.Network, p peer.ID) int {
	for i, n := range nw.Nodes {
		if n.PeerID() == p {
			return i
		}
	}
	return -1
}

// closestByXOR ranks the even nodes by XOR distance between SHA-256 of the
// key and SHA-256 of each peer ID, computed here independently of the DHT.
func closestByXOR(nw *testnet.Network, key string, k int) []peer.ID {
	var ids []peer.ID
	for i, n := range nw.Nodes {
		if i%2 == 0 {
			ids = append(ids, n.PeerID())
		}
	}
	target := sha(key)
	slices.SortFunc(ids, func(a, b peer.ID) int {
		return bytes.Compare(xor(sha(string(a)), target), xor(sha(string(b)), target))
	})
	return ids[:k]
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func xor(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}
