package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/wire"
)

// backupCall sends a backup request with the device's upload
// authorization for what (when keys is set) and returns the status, the
// error code of a JSON error and the body.
func backupCall(t *testing.T, method, url string, body []byte, hdr map[string]string, keys *e2ee.DeviceKeys, user ident.UserID, peerID, what string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if keys != nil {
		a := wire.SignUpload(*keys, user, peerID, what, time.Now())
		req.Header.Set(api.HeaderUser, a.User.String())
		req.Header.Set(api.HeaderDevice, a.Device.String())
		req.Header.Set(api.HeaderTime, strconv.FormatInt(a.Time.Unix(), 10))
		req.Header.Set(api.HeaderSignature, base64.RawURLEncoding.EncodeToString(a.Signature))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error wire.ErrorDetail `json:"error"`
		}
		if err := json.Unmarshal(data, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("%s %s: %d with a body that is not a JSON error: %s", method, url, resp.StatusCode, data)
		}
		return resp.StatusCode, e.Error.Code, data
	}
	return resp.StatusCode, "", data
}

func TestBackupHTTP(t *testing.T) {
	nw := testnet.New(t, 3, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Backup.QuotaBytes, cfg.Backup.QuotaChunks = 1<<20, 16
	}))
	url := nw.Nodes[0].APIURL()
	peerID := nw.Nodes[0].PeerID().String()
	d := registerOpen(t, url)
	waitVersion(t, nw, d.user, 1)
	keys := d.keys

	// Preflight: within the quota, and a backup that can never fit.
	var q map[string]uint64
	st, code, body := backupCall(t, "POST", url+"/v1/backup/check", []byte(`{"bytes": 1000, "chunks": 2}`), nil, &keys, d.user, peerID, wire.CheckWhat(1000, 2))
	if st != 200 || json.Unmarshal(body, &q) != nil || q["quota_bytes"] != 1<<20 || q["quota_chunks"] != 16 || q["used_bytes"] != 0 {
		t.Fatalf("check: %d %s %s", st, code, body)
	}
	if st, code, _ := backupCall(t, "POST", url+"/v1/backup/check", []byte(`{"bytes": 2000000, "chunks": 2}`), nil, &keys, d.user, peerID, wire.CheckWhat(2000000, 2)); st != 413 || code != "quota_exceeded" {
		t.Fatalf("over-quota check: %d %s", st, code)
	}
	if st, code, _ := backupCall(t, "POST", url+"/v1/backup/check", []byte(`{"bytes": 1}`), nil, &keys, d.user, peerID, wire.CheckWhat(1, 0)); st != 400 || code != "bad_request" {
		t.Fatalf("check without chunks: %d %s", st, code)
	}
	if st, code, _ := backupCall(t, "POST", url+"/v1/backup/check", []byte(`{"bytes": 1000, "chunks": 2}`), nil, nil, d.user, peerID, ""); st != 401 || code != "unauthenticated" {
		t.Fatalf("check without auth: %d %s", st, code)
	}

	// Upload, read from every node, count replicas.
	chunk := bytes.Repeat([]byte("ciphertext "), 1000)
	c := wire.ChunkCID(chunk)
	chunkURL := url + "/v1/backup/chunks/" + c.String()
	st, code, body = backupCall(t, "PUT", chunkURL, chunk, nil, &keys, d.user, peerID, c.String())
	var put struct {
		CID      string `json:"cid"`
		Replicas int    `json:"replicas"`
	}
	if st != 200 || json.Unmarshal(body, &put) != nil || put.CID != c.String() || put.Replicas < 2 {
		t.Fatalf("put: %d %s %s", st, code, body)
	}
	for i, nd := range nw.Nodes {
		st, code, got := backupCall(t, "GET", nd.APIURL()+"/v1/backup/chunks/"+c.String(), nil, nil, nil, d.user, "", "")
		if st != 200 || !bytes.Equal(got, chunk) {
			t.Fatalf("node %d get: %d %s", i, st, code)
		}
	}
	tstest.WaitFor(t, 30*time.Second, func() error {
		var rep struct {
			Replicas int      `json:"replicas"`
			Holders  []string `json:"holders"`
		}
		st, _, body := backupCall(t, "GET", chunkURL+"/replicas", nil, nil, nil, d.user, "", "")
		if st == 200 && json.Unmarshal(body, &rep) == nil && rep.Replicas == 3 && len(rep.Holders) == 3 {
			return nil
		}
		return fmt.Errorf("replicas: %d %s", st, body)
	})

	// Errors.
	other := bytes.Repeat([]byte("x"), 10)
	for name, tc := range map[string]struct {
		url, what string
		body      []byte
		hdr       map[string]string
		keys      *e2ee.DeviceKeys
		status    int
		code      string
	}{
		"CID mismatch":             {chunkURL, c.String(), other, nil, &keys, 400, "bad_chunk"},
		"bad CID":                  {url + "/v1/backup/chunks/bafy", "bafy", chunk, nil, &keys, 400, "bad_chunk"},
		"too big":                  {url + "/v1/backup/chunks/" + wire.ChunkCID(make([]byte, wire.MaxChunkSize+1)).String(), wire.ChunkCID(make([]byte, wire.MaxChunkSize+1)).String(), make([]byte, wire.MaxChunkSize+1), nil, &keys, 400, "bad_chunk"},
		"no auth":                  {chunkURL, "", chunk, nil, nil, 401, "unauthenticated"},
		"signed for another chunk": {chunkURL, wire.ChunkCID(other).String(), chunk, nil, &keys, 401, "unauthenticated"},
		"bad kind":                 {chunkURL, c.String(), chunk, map[string]string{api.HeaderKind: "other"}, &keys, 400, "bad_request"},
		"bad manifest":             {chunkURL, c.String(), chunk, map[string]string{api.HeaderKind: "manifest"}, &keys, 400, "bad_chunk"},
		"over quota":               {url + "/v1/backup/chunks/" + wire.ChunkCID(make([]byte, 1<<20)).String(), wire.ChunkCID(make([]byte, 1<<20)).String(), make([]byte, 1<<20), nil, &keys, 413, "quota_exceeded"},
	} {
		st, code, _ := backupCall(t, "PUT", tc.url, tc.body, tc.hdr, tc.keys, d.user, peerID, tc.what)
		if st != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", name, st, code, tc.status, tc.code)
		}
	}
	if st, code, _ := backupCall(t, "GET", url+"/v1/backup/chunks/"+wire.ChunkCID(other).String(), nil, nil, nil, d.user, "", ""); st != 404 || code != "not_found" {
		t.Fatalf("missing chunk: %d %s", st, code)
	}

	// Pointers.
	m := wire.Manifest{User: d.user, Created: time.Now(), Size: uint64(len(chunk)), Chunks: []wire.ManifestChunk{{CID: c, Size: uint32(len(chunk))}}}
	mb, _ := m.Encode()
	mc := wire.ChunkCID(mb)
	if st, code, _ := backupCall(t, "PUT", url+"/v1/backup/chunks/"+mc.String(), mb, map[string]string{api.HeaderKind: "manifest"}, &keys, d.user, peerID, mc.String()); st != 200 {
		t.Fatalf("put manifest: %d %s", st, code)
	}
	var u api.UserResponse
	if st, _ := call(t, "GET", url+"/v1/users/"+d.user.String(), nil, &u); st != 200 {
		t.Fatal(st)
	}
	sign := func(at time.Time) []byte {
		r, err := wire.SignBackupPointer(wire.BackupPointer{User: d.user, Device: keys.ID(), Manifest: mc, Size: m.Size, Time: at}, keys.Signing, u.Links)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := r.Encode()
		return b
	}
	now := time.Now()
	p1 := sign(now)
	if st, code, _ := backupCall(t, "PUT", url+"/v1/backup/pointer", p1, nil, nil, d.user, "", ""); st != 204 {
		t.Fatalf("put pointer: %d %s", st, code)
	}
	if st, code, _ := backupCall(t, "PUT", url+"/v1/backup/pointer", sign(now.Add(-time.Second)), nil, nil, d.user, "", ""); st != 409 || code != "stale_pointer" {
		t.Fatalf("older pointer: %d %s", st, code)
	}
	bad := bytes.Clone(p1)
	bad[len(bad)/2] ^= 1
	if st, code, _ := backupCall(t, "PUT", url+"/v1/backup/pointer", bad, nil, nil, d.user, "", ""); st != 400 || code != "bad_pointer" {
		t.Fatalf("damaged pointer: %d %s", st, code)
	}
	for i, nd := range nw.Nodes {
		st, code, got := backupCall(t, "GET", nd.APIURL()+"/v1/backup/pointer/"+d.user.String(), nil, nil, nil, d.user, "", "")
		if st != 200 || !bytes.Equal(got, p1) {
			t.Fatalf("node %d get pointer: %d %s", i, st, code)
		}
	}
	stranger := registerOpen(t, url)
	if st, code, _ := backupCall(t, "GET", url+"/v1/backup/pointer/"+stranger.user.String(), nil, nil, nil, d.user, "", ""); st != 404 || code != "not_found" {
		t.Fatalf("pointer of a user without backups: %d %s", st, code)
	}
	if st, code, _ := backupCall(t, "GET", url+"/v1/backup/pointer/nope", nil, nil, nil, d.user, "", ""); st != 400 || code != "bad_user_id" {
		t.Fatalf("bad user ID: %d %s", st, code)
	}
}
