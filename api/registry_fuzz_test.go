package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
)

func post(t testing.TB, u, ctype string, body []byte) int {
	resp, err := http.Post(u, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// FuzzRegisterBody: any body of POST /v1/users gets one of the documented
// answers, never a server error.
func FuzzRegisterBody(f *testing.F) {
	nw := testnet.New(f, 1)
	a := nw.Nodes[0].APIURL()
	valid, _ := registration(f, a, newKeys(f), "")
	b, _ := json.Marshal(valid)
	f.Add(b)
	f.Add([]byte(`{"genesis":"AA==","proof":"AA=="}`))
	f.Add([]byte(`{"genesis":1}`))
	f.Add([]byte(`{}{}`))
	f.Add(bytes.Repeat([]byte(" "), api.MaxRegistryBodySize+1))
	allowed := []int{201, 400, 401, 409, 413, 422}
	f.Fuzz(func(t *testing.T, body []byte) {
		if st := post(t, a+"/v1/users", "application/json", body); !slices.Contains(allowed, st) {
			t.Fatalf("status %d", st)
		}
	})
}

// FuzzAppendLinkBody: any body of POST /v1/users/{id}/links gets one of
// the documented answers, and a refused one leaves the chain at version 1.
func FuzzAppendLinkBody(f *testing.F) {
	nw := testnet.New(f, 1)
	a := nw.Nodes[0].APIURL()
	phone := newKeys(f)
	reg, g := registration(f, a, phone, "")
	if st, code := call(f, "POST", a+"/v1/users", reg, nil); st != 201 {
		f.Fatalf("register: %d %s", st, code)
	}
	user := g.UserID()
	set, _, _ := ident.DecodeChain(user, [][]byte{g.Encode()})
	rev, _ := e2ee.NewRevokeDevice(set, phone, phone.ID(), time.Now())
	other := newKeys(f)
	req, _ := e2ee.NewAddDeviceRequest(set.Head(), other)
	add, _ := e2ee.NewAddDevice(set, other, req, time.Now())
	for _, l := range [][]byte{rev.Encode(), add.Encode(), g.Encode()} {
		b, _ := json.Marshal(api.AppendLinkRequest{Link: l})
		f.Add(b)
	}
	f.Add([]byte(`{"link":"!!"}`))
	allowed := []int{200, 400, 404, 409, 413, 422}
	f.Fuzz(func(t *testing.T, body []byte) {
		st := post(t, a+"/v1/users/"+user.String()+"/links", "application/json", body)
		if !slices.Contains(allowed, st) {
			t.Fatalf("status %d", st)
		}
		if st == 200 {
			t.Fatal("accepted a link that no device of the chain signed")
		}
		if s, _, _ := chainAt(t, a, user); s.Version() != 1 {
			t.Fatalf("chain at version %d after a refused link", s.Version())
		}
	})
}

// FuzzRendezvous: any mailbox name and body get one of the documented
// answers, never a server error.
func FuzzRendezvous(f *testing.F) {
	nw := testnet.New(f, 1)
	a := nw.Nodes[0].APIURL()
	var rid ident.RendezvousID
	f.Add(rid.String(), []byte("sealed"))
	f.Add("not-an-id", []byte{})
	f.Add(rid.String()+"x", bytes.Repeat([]byte{1}, 9000))
	allowed := []int{201, 400, 404, 413, 429}
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		st := post(t, a+"/v1/rendezvous/"+url.PathEscape(name), "application/octet-stream", body)
		if !slices.Contains(allowed, st) {
			t.Fatalf("status %d for %q", st, name)
		}
	})
}
