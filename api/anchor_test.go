package api_test

import (
	"net/http"
	"testing"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// A node without a chain backend serves a chain whose links have no proofs
// (null, one per link), and answers the batch endpoint with clear errors.
func TestUserProofsAndBatchEndpointWithoutChain(t *testing.T) {
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	req, g := registration(t, url, newKeys(t), "")
	if st, code := call(t, "POST", url+"/v1/users", req, nil); st != http.StatusCreated {
		t.Fatalf("register: %d %s", st, code)
	}
	var u api.UserResponse
	if st, code := call(t, "GET", url+"/v1/users/"+g.UserID().String(), nil, &u); st != 200 {
		t.Fatalf("lookup: %d %s", st, code)
	}
	if len(u.Proofs) != len(u.Links) || u.Proofs[0] != nil {
		t.Fatalf("proofs %v for %d links, want one null", u.Proofs, len(u.Links))
	}

	some := anchorproof.BatchCID([]byte("not stored"))
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/anchors/batches/" + some.String(), 404, "batch_not_found"},
		{"/v1/anchors/batches/nonsense", 400, "bad_cid"},
		// A CIDv0 (dag-pb): a CID, but not of a batch.
		{"/v1/anchors/batches/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", 400, "bad_cid"},
	} {
		if st, code := call(t, "GET", url+c.path, nil, nil); st != c.status || code != c.code {
			t.Errorf("GET %s: %d %s, want %d %s", c.path, st, code, c.status, c.code)
		}
	}
}
