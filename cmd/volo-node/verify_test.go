package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// postJSON sends body to url and decodes a 2xx answer into out.
func postJSON(t testing.TB, url string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
	}
}

func newDevice(t testing.TB) e2ee.DeviceKeys {
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// registerUser registers a new user with device k at the node at url
// (open registration) and returns the verified chain.
func registerUser(t testing.TB, url string, k e2ee.DeviceKeys) ident.DeviceSet {
	t.Helper()
	var n api.NonceResponse
	postJSON(t, url+"/v1/auth/nonce", nil, &n)
	g, err := e2ee.NewGenesis(k, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	postJSON(t, url+"/v1/users", api.RegisterRequest{Genesis: g.Encode(), Proof: e2ee.SignRegistration(k, n.Nonce).Encode()}, nil)
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// linkDevice adds device nk to set, signed by k, through the node at url.
func linkDevice(t testing.TB, url string, set ident.DeviceSet, k, nk e2ee.DeviceKeys) ident.DeviceSet {
	t.Helper()
	req, err := e2ee.NewAddDeviceRequest(set.Head(), nk)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e2ee.NewAddDevice(set, k, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	postJSON(t, url+"/v1/users/"+set.User().String()+"/links", api.AppendLinkRequest{Link: l.Encode()}, nil)
	next, err := set.Apply(l)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// userAt reads user's chain and proofs from the node at url.
func userAt(t testing.TB, url string, user ident.UserID) (api.UserResponse, []byte) {
	t.Helper()
	resp, err := http.Get(url + "/v1/users/" + user.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var u api.UserResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(data, &u); err != nil {
			t.Fatal(err)
		}
	}
	return u, data
}

// allProved reports whether u has version links, each with a proof.
func allProved(u api.UserResponse, version int) bool {
	if len(u.Links) != version || len(u.Proofs) != version {
		return false
	}
	for _, p := range u.Proofs {
		if p == nil {
			return false
		}
	}
	return true
}

// proofsChanged reports whether every proof of u differs from old's.
func proofsChanged(u, old api.UserResponse) bool {
	for i, p := range u.Proofs {
		if p == nil || p.TxID == old.Proofs[i].TxID {
			return false
		}
	}
	return true
}

// blocksUntil makes devnet blocks one at a time, giving the nodes up to a
// second after each to react, until done reports true; it fails after
// hangGuard.
func blocksUntil(t testing.TB, nw *testnet.Network, what string, done func() bool) {
	t.Helper()
	reacted := func() error {
		if done() {
			return nil
		}
		return errors.New("not yet")
	}
	tstest.WaitFor(t, hangGuard, func() error {
		if done() {
			return nil
		}
		nw.Devnet().MakeBlock()
		if tstest.Poll(time.Second, reacted) == nil {
			return nil
		}
		return fmt.Errorf("%s: not reached; tip %+v\n%s", what, nw.Devnet().Tip(), nw)
	})
}

// verify runs volo-node verify in this process and returns its exit code
// and output.
func verify(t testing.TB, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(append([]string{"verify"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	var ee *exitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.code, out.String() + "\nerror: " + err.Error()
	default:
		return 1, out.String() + "\nerror: " + err.Error()
	}
}

func writeChainFile(t testing.TB, u api.UserResponse) string {
	t.Helper()
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "chain.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withProof returns a copy of u whose proof i is p re-encoded.
func withProof(u api.UserResponse, i int, p anchorproof.AnchorProof) api.UserResponse {
	c := u
	c.Proofs = append([]*api.AnchorProof(nil), u.Proofs...)
	ap := *u.Proofs[i]
	ap.Proof = p.Encode()
	c.Proofs[i] = &ap
	return c
}

// THE end-to-end test of anchoring: a user registered on node 0 and a
// device linked through node 1 of a two-node network sharing node 0's
// devnet; both links are anchored, mirrored to the other node, and
// verified by volo-node verify over node-to-client and node-to-node; then
// every way it must fail, and a rollback the node recovers from.
func TestVerifyEndToEnd(t *testing.T) {
	nw := testnet.New(t, 2, testnet.Chain(0))
	dn := nw.Devnet()
	url0, url1 := nw.Nodes[0].APIURL(), nw.Nodes[1].APIURL()
	phone, laptop := newDevice(t), newDevice(t)
	set := registerUser(t, url0, phone)
	user := set.User()
	// Node 1 learns the chain (gossip or DHT) and accepts the new link.
	set = linkDevice(t, url1, set, phone, laptop)

	// Both nodes serve both proofs: each anchored its own link and
	// mirrored the other's.
	var u0, u1 api.UserResponse
	blocksUntil(t, nw, "both links anchored and mirrored", func() bool {
		u0, _ = userAt(t, url0, user)
		u1, _ = userAt(t, url1, user)
		return allProved(u0, 2) && allProved(u1, 2)
	})
	for i := range 2 {
		if !bytes.Equal(u0.Proofs[i].Proof, u1.Proofs[i].Proof) {
			t.Fatalf("link %d: the nodes serve different proofs", i)
		}
	}
	// A mirrored batch is served by the node that did not publish it.
	if st := httpStatus(t, url0+"/v1/anchors/batches/"+u0.Proofs[1].BatchCID); st != 200 {
		t.Fatalf("node 0 does not serve node 1's batch: %d", st)
	}

	depth := strconv.Itoa(testnet.ChainDepth)
	socket := []string{"--cardano-socket", dn.SocketPath(), "--network", "devnet"}
	relay := []string{"--cardano-relay", dn.NodeToNodeAddr(), "--network-magic", "42"}
	file := writeChainFile(t, u1)
	for name, args := range map[string][]string{
		"node URL, socket":   append([]string{"--user", user.String(), "--node-url", url1, "--min-depth", depth}, socket...),
		"node URL, relay":    append([]string{"--user", user.String(), "--node-url", url0, "--min-depth", depth}, relay...),
		"chain file, socket": append([]string{"--user", user.String(), "--chain-file", file, "--min-depth", depth}, socket...),
		"chain file, relay":  append([]string{"--user", user.String(), "--chain-file", file, "--min-depth", depth, "--json"}, relay...),
	} {
		code, out := verify(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d:\n%s", name, code, out)
		}
		if !strings.Contains(out, "OK: every link") && !strings.Contains(out, `"ok": true`) {
			t.Fatalf("%s: no verdict in\n%s", name, out)
		}
	}

	// Every failure: exit 1 with the reason. (The passes above are the
	// positive control for each.)
	p1, err := anchorproof.DecodeAnchorProof(u1.Proofs[1].Proof)
	if err != nil {
		t.Fatal(err)
	}
	tamperedSig := p1
	tamperedSig.Sig = bytes.Clone(p1.Sig)
	tamperedSig.Sig[0] ^= 1
	tamperedLeaf := p1 // claims the link is leaf 1 of 2 (it is the only leaf)
	tamperedLeaf.LeafIndex, tamperedLeaf.TreeSize, tamperedLeaf.Path = 1, 2, [][]byte{bytes.Repeat([]byte{0xee}, 32)}
	tamperedBlock := p1
	tamperedBlock.Block.Hash = bytes.Repeat([]byte{0x77}, 32)
	otherRoot := p1
	otherRoot.Root = bytes.Repeat([]byte{0x5a}, 32)
	noProof := u1
	noProof.Proofs = []*api.AnchorProof{u1.Proofs[0], nil}
	for _, c := range []struct {
		name   string
		u      api.UserResponse
		extra  []string
		reason string
	}{
		{"tampered signature", withProof(u1, 1, tamperedSig), nil, "signature over the anchor does not verify"},
		{"tampered leaf", withProof(u1, 1, tamperedLeaf), nil, "the anchor says 1"},
		{"tampered block", withProof(u1, 1, tamperedBlock), nil, "not on the chain"},
		{"another root", withProof(u1, 1, otherRoot), nil, "claims root"},
		{"link without proof", noProof, nil, "never anchored"},
		{"too little depth", u1, []string{"--min-depth", "1000"}, "less than the required 1000"},
	} {
		args := append([]string{"--user", user.String(), "--chain-file", writeChainFile(t, c.u), "--min-depth", depth}, socket...)
		code, out := verify(t, append(args, c.extra...)...)
		if code != exitNotAnchored || !strings.Contains(out, c.reason) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", c.name, code, exitNotAnchored, c.reason, out)
		}
	}
	if code, out := verify(t, "--user", user.String(), "--node-url", url1); code != exitUsage {
		t.Errorf("no Cardano node named: exit %d:\n%s", code, out)
	}

	// A rollback of the anchors' blocks: verification fails, the nodes
	// anchor the batches again, verification passes with the new proofs.
	before := u1
	oldest := min(u1.Proofs[0].BlockNo, u1.Proofs[1].BlockNo)
	if err := dn.Rollback(int(dn.Tip().BlockNo - oldest + 1)); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--user", user.String(), "--node-url", url1, "--min-depth", depth}, socket...)
	if code, out := verify(t, args...); code != exitNotAnchored || !strings.Contains(out, "not on the chain") {
		t.Fatalf("after the rollback: exit %d:\n%s", code, out)
	}
	blocksUntil(t, nw, "links anchored again after the rollback", func() bool {
		u0, _ = userAt(t, url0, user)
		u1, _ = userAt(t, url1, user)
		return allProved(u1, 2) && proofsChanged(u1, before) && allProved(u0, 2)
	})
	if code, out := verify(t, args...); code != 0 {
		t.Fatalf("after re-anchoring: exit %d:\n%s", code, out)
	}

	// A link accepted after the last batch: not anchored until blocks come.
	tablet := newDevice(t)
	linkDevice(t, url0, set, laptop, tablet)
	args[3] = url0
	if code, out := verify(t, args...); code != exitNotAnchored || !strings.Contains(out, "never anchored") {
		t.Fatalf("fresh link: exit %d:\n%s", code, out)
	}
}

func httpStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
