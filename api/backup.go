package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Limits and headers of the backup endpoints (docs/api.md).
const (
	// MaxBackupCheckBodySize bounds the JSON body of POST /v1/backup/check.
	MaxBackupCheckBodySize = 1 << 10
	// HeaderUser, HeaderDevice, HeaderTime and HeaderSignature carry a
	// device's upload authorization (wire.BackupUploadMessage).
	HeaderUser      = "Volo-User"
	HeaderDevice    = "Volo-Device"
	HeaderTime      = "Volo-Time"
	HeaderSignature = "Volo-Signature"
	// HeaderKind is "manifest" on the upload of a manifest, else absent
	// or "chunk".
	HeaderKind = "Volo-Kind"
)

// WithBackup mounts the backup store's endpoints.
func WithBackup(b *backupstore.Service) Option { return func(s *Server) { s.backup = b } }

func (s *Server) mountBackup(mux *http.ServeMux) {
	s.route(mux, "/v1/backup/check", http.MethodPost, s.backupCheck)
	s.routes(mux, "/v1/backup/chunks/{cid}", map[string]http.HandlerFunc{
		http.MethodPut: s.backupPutChunk,
		http.MethodGet: s.backupGetChunk,
	})
	s.route(mux, "/v1/backup/chunks/{cid}/replicas", http.MethodGet, s.backupReplicas)
	s.route(mux, "/v1/backup/pointer", http.MethodPut, s.backupPutPointer)
	s.route(mux, "/v1/backup/pointer/{user_id}", http.MethodGet, s.backupGetPointer)
}

// backupError maps the backup store's errors to the status and code of
// docs/api.md.
func backupError(err error) (int, string) { return errorStatus(err, backupErrors) }

var backupErrors = []errorCode{
	{backupstore.ErrUnauthenticated, http.StatusUnauthorized, wire.CodeUnauthenticated},
	{backupstore.ErrQuotaExceeded, http.StatusRequestEntityTooLarge, wire.CodeQuotaExceeded},
	{wire.ErrBadChunk, http.StatusBadRequest, wire.CodeBadChunk},
	{wire.ErrBadPointer, http.StatusBadRequest, wire.CodeBadPointer},
	{backupstore.ErrStalePointer, http.StatusConflict, wire.CodeStalePointer},
	{backupstore.ErrNotFound, http.StatusNotFound, wire.CodeNotFound},
	{backupstore.ErrNoStorage, http.StatusServiceUnavailable, wire.CodeNoStorage},
	{backupstore.ErrNoQuorum, http.StatusServiceUnavailable, wire.CodeNoQuorum},
	{backupstore.ErrStopped, http.StatusServiceUnavailable, wire.CodeUnavailable},
	{backupstore.ErrChainUnavailable, http.StatusServiceUnavailable, wire.CodeUnavailable},
}

// StatusClientClosedRequest answers a request whose client went away
// before the node finished it (nobody reads the answer).
const StatusClientClosedRequest = 499

func (s *Server) writeBackupError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The client cancelled or disconnected: not a failure of the node.
		s.log.Debug("backup request abandoned by the client", "method", r.Method, "path", r.URL.Path, "err", err)
		WriteError(w, StatusClientClosedRequest, wire.CodeCancelled, "request cancelled by the client")
		return
	}
	status, code := backupError(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error("backup request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	WriteError(w, status, code, msg)
}

// uploadAuth reads the upload authorization headers.
func uploadAuth(r *http.Request) (wire.UploadAuth, error) {
	bad := func(format string, a ...any) (wire.UploadAuth, error) {
		return wire.UploadAuth{}, fmt.Errorf("%w: %s", backupstore.ErrUnauthenticated, fmt.Sprintf(format, a...))
	}
	h := r.Header
	for _, k := range []string{HeaderUser, HeaderDevice, HeaderTime, HeaderSignature} {
		if h.Get(k) == "" {
			return bad("missing header %s", k)
		}
	}
	user, err := ident.ParseUserID(h.Get(HeaderUser))
	if err != nil {
		return bad("%s: %v", HeaderUser, err)
	}
	dev, err := ident.ParseDeviceID(h.Get(HeaderDevice))
	if err != nil {
		return bad("%s: %v", HeaderDevice, err)
	}
	secs, err := strconv.ParseInt(h.Get(HeaderTime), 10, 64)
	if err != nil || secs <= 0 || secs > 1<<40 {
		return bad("%s: %q is not unix seconds", HeaderTime, h.Get(HeaderTime))
	}
	sig, err := base64.RawURLEncoding.DecodeString(h.Get(HeaderSignature))
	if err != nil || len(sig) != ident.SignatureSize {
		return bad("%s: want %d bytes in unpadded base64url", HeaderSignature, ident.SignatureSize)
	}
	return wire.UploadAuth{User: user, Device: dev, Time: time.Unix(secs, 0).UTC(), Signature: sig}, nil
}

func (s *Server) backupCheck(w http.ResponseWriter, r *http.Request) {
	auth, err := uploadAuth(r)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	var req wire.BackupCheckRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBackupCheckBodySize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Bytes == nil || req.Chunks == nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, `body must be {"bytes": N, "chunks": M}`)
		return
	}
	q, err := s.backup.Check(r.Context(), auth, *req.Bytes, *req.Chunks)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.BackupQuota{QuotaBytes: q.QuotaBytes, QuotaChunks: q.QuotaChunks, UsedBytes: q.Bytes, UsedChunks: q.Chunks})
}

func (s *Server) backupPutChunk(w http.ResponseWriter, r *http.Request) {
	c, err := wire.ParseChunkCID(r.PathValue("cid"))
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	manifest := false
	switch k := r.Header.Get(HeaderKind); k {
	case "", "chunk":
	case "manifest":
		manifest = true
	default:
		WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("%s: %q is neither chunk nor manifest", HeaderKind, k))
		return
	}
	auth, err := uploadAuth(r)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	data, err := readChunk(w, r)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	n, err := s.backup.Put(r.Context(), c, data, manifest, auth)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.ChunkStored{CID: c.String(), Replicas: n})
}

// readChunk reads a request body of 1 to wire.MaxChunkSize bytes into one
// buffer of its announced length.
func readChunk(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > wire.MaxChunkSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", wire.ErrBadChunk, r.ContentLength, wire.MaxChunkSize)
	}
	body := http.MaxBytesReader(w, r.Body, wire.MaxChunkSize)
	var data []byte
	var err error
	if r.ContentLength > 0 {
		data = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, data)
	} else {
		data, err = io.ReadAll(body)
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, fmt.Errorf("%w: more than %d bytes", wire.ErrBadChunk, wire.MaxChunkSize)
	case err != nil:
		return nil, fmt.Errorf("%w: read body: %v", wire.ErrBadChunk, err)
	case len(data) == 0:
		return nil, fmt.Errorf("%w: empty body", wire.ErrBadChunk)
	}
	return data, nil
}

func (s *Server) backupGetChunk(w http.ResponseWriter, r *http.Request) {
	c, err := wire.ParseChunkCID(r.PathValue("cid"))
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	data, err := s.backup.Get(r.Context(), c)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(data)
	}
}

func (s *Server) backupReplicas(w http.ResponseWriter, r *http.Request) {
	c, err := wire.ParseChunkCID(r.PathValue("cid"))
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	holders, err := s.backup.Replicas(r.Context(), c)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	ids := make([]string, len(holders))
	for i, p := range holders {
		ids[i] = p.String()
	}
	WriteJSON(w, http.StatusOK, wire.ChunkReplicas{CID: c.String(), Holders: ids, Replicas: len(ids)})
}

func (s *Server) backupPutPointer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxPointerRecordSize))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		WriteError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("a pointer record is at most %d bytes", wire.MaxPointerRecordSize))
		return
	}
	if err != nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, "read body: "+err.Error())
		return
	}
	if _, err := s.backup.PutPointer(r.Context(), body); err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) backupGetPointer(w http.ResponseWriter, r *http.Request) {
	user, err := ident.ParseUserID(r.PathValue("user_id"))
	if err != nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadUserID, err.Error())
		return
	}
	b, err := s.backup.Pointer(r.Context(), user)
	if err != nil {
		s.writeBackupError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
