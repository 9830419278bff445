package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Backup error codes of the node API (docs/api.md, "Backups").
const (
	CodeQuotaExceeded   = wire.CodeQuotaExceeded
	CodeNotFound        = wire.CodeNotFound
	CodeBadChunk        = wire.CodeBadChunk
	CodeStalePointer    = wire.CodeStalePointer
	CodeUnauthenticated = wire.CodeUnauthenticated
)

// ChunkTimeout bounds the upload or download of one chunk.
const ChunkTimeout = 2 * time.Minute

// Upload authorization headers (docs/api.md).
const (
	headerUser      = "Volo-User"
	headerDevice    = "Volo-Device"
	headerTime      = "Volo-Time"
	headerSignature = "Volo-Signature"
	headerKind      = "Volo-Kind"
)

// NodeInfo asks the node who it is.
func (a *API) NodeInfo(ctx context.Context) (wire.NodeInfo, error) {
	var ni wire.NodeInfo
	if _, err := a.do(ctx, RequestTimeout, http.MethodGet, "/v1/node", nil, "", nil, &ni, http.StatusOK); err != nil {
		return wire.NodeInfo{}, err
	}
	if ni.PeerID == "" {
		return wire.NodeInfo{}, fmt.Errorf("%w: no peer ID in GET /v1/node", ErrNodeMisbehaved)
	}
	return ni, nil
}

func setAuth(req *http.Request, auth wire.UploadAuth) {
	req.Header.Set(headerUser, auth.User.String())
	req.Header.Set(headerDevice, auth.Device.String())
	req.Header.Set(headerTime, strconv.FormatInt(auth.Time.Unix(), 10))
	req.Header.Set(headerSignature, base64.RawURLEncoding.EncodeToString(auth.Signature))
}

// send sends one request with a binary or JSON body and returns the status
// and the answer's body (at most limit bytes). Statuses not in ok are an
// *APIError.
func (a *API) send(ctx context.Context, timeout time.Duration, method, path, contentType string, body []byte, hdr func(*http.Request), limit int64, ok ...int) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.endpoint(path, nil), rd)
	if err != nil {
		return 0, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if hdr != nil {
		hdr(req)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return resp.StatusCode, nil, fmt.Errorf("client: %s %s: answer of %d bytes, limit %d", method, path, resp.ContentLength, limit)
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	data := buf.Bytes()
	if int64(len(data)) > limit {
		return resp.StatusCode, nil, fmt.Errorf("client: %s %s: answer larger than %d bytes", method, path, limit)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp.StatusCode, data, nil
		}
	}
	return resp.StatusCode, nil, fmt.Errorf("client: %s %s: %w", method, path, parseError(resp.StatusCode, data))
}

// CheckBackup asks the node whether a backup of bytes bytes in chunks
// chunks fits the user's quota (POST /v1/backup/check). Over the quota it
// is an *APIError with code quota_exceeded.
func (a *API) CheckBackup(ctx context.Context, auth wire.UploadAuth, bytes, chunks uint64) (wire.BackupQuota, error) {
	body, err := json.Marshal(wire.BackupCheckRequest{Bytes: &bytes, Chunks: &chunks})
	if err != nil {
		return wire.BackupQuota{}, fmt.Errorf("client: encode backup check: %w", err)
	}
	_, data, err := a.send(ctx, RequestTimeout, http.MethodPost, "/v1/backup/check", "application/json", body,
		func(r *http.Request) { setAuth(r, auth) }, MaxResponseSize, http.StatusOK)
	if err != nil {
		return wire.BackupQuota{}, err
	}
	var q wire.BackupQuota
	if err := json.Unmarshal(data, &q); err != nil {
		return wire.BackupQuota{}, fmt.Errorf("client: POST /v1/backup/check: bad answer: %w", err)
	}
	return q, nil
}

// PutChunk uploads one chunk (PUT /v1/backup/chunks/{cid}); manifest marks
// a backup's manifest. It returns the number of replicas that stored it.
func (a *API) PutChunk(ctx context.Context, auth wire.UploadAuth, c cid.Cid, data []byte, manifest bool) (int, error) {
	path := "/v1/backup/chunks/" + c.String()
	_, ans, err := a.send(ctx, ChunkTimeout, http.MethodPut, path, "application/octet-stream", data, func(r *http.Request) {
		setAuth(r, auth)
		if manifest {
			r.Header.Set(headerKind, "manifest")
		}
	}, MaxResponseSize, http.StatusOK, http.StatusCreated)
	if err != nil {
		return 0, err
	}
	var out wire.ChunkStored
	if err := json.Unmarshal(ans, &out); err != nil {
		return 0, fmt.Errorf("client: PUT %s: bad answer: %w", path, err)
	}
	if out.CID != c.String() {
		return 0, fmt.Errorf("%w: PUT %s answered for chunk %q", ErrNodeMisbehaved, path, out.CID)
	}
	return out.Replicas, nil
}

// GetChunk downloads one chunk (GET /v1/backup/chunks/{cid}) and checks
// it against its CID: a chunk that does not match is wire.ErrBadChunk.
func (a *API) GetChunk(ctx context.Context, c cid.Cid) ([]byte, error) {
	_, data, err := a.send(ctx, ChunkTimeout, http.MethodGet, "/v1/backup/chunks/"+c.String(), "", nil, nil, wire.MaxChunkSize, http.StatusOK)
	if err != nil {
		return nil, err
	}
	if err := wire.CheckChunk(c, data); err != nil {
		return nil, fmt.Errorf("client: chunk from %s: %w", a.URL(), err)
	}
	return data, nil
}

// Replicas asks the node which storage nodes hold chunk c.
func (a *API) Replicas(ctx context.Context, c cid.Cid) (wire.ChunkReplicas, error) {
	var r wire.ChunkReplicas
	if _, err := a.do(ctx, RequestTimeout, http.MethodGet, "/v1/backup/chunks/"+c.String()+"/replicas", nil, "", nil, &r, http.StatusOK); err != nil {
		return wire.ChunkReplicas{}, err
	}
	if r.CID != c.String() {
		return wire.ChunkReplicas{}, fmt.Errorf("%w: replicas of %s answered for %q", ErrNodeMisbehaved, c, r.CID)
	}
	return r, nil
}

// PutPointer publishes a signed backup pointer record (PUT /v1/backup/pointer).
func (a *API) PutPointer(ctx context.Context, rec []byte) error {
	_, _, err := a.send(ctx, RequestTimeout, http.MethodPut, "/v1/backup/pointer", "application/cbor", rec, nil, MaxResponseSize, http.StatusNoContent, http.StatusOK)
	return err
}

// Pointer fetches the encoded backup pointer record of user (GET
// /v1/backup/pointer/{user}). The caller decodes and verifies it.
func (a *API) Pointer(ctx context.Context, user ident.UserID) ([]byte, error) {
	_, data, err := a.send(ctx, RequestTimeout, http.MethodGet, "/v1/backup/pointer/"+user.String(), "", nil, nil, wire.MaxPointerRecordSize, http.StatusOK)
	return data, err
}
