package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/wire"
)

// Body limits of the registry endpoints (docs/api.md).
const (
	// MaxRegistryBodySize bounds the JSON bodies of POST /v1/users and
	// POST /v1/users/{user_id}/links.
	MaxRegistryBodySize = 16 << 10
)

// WithRegistry mounts the key registry's endpoints.
func WithRegistry(k *keyregistry.Service) Option { return func(s *Server) { s.keys = k } }

func (s *Server) mountRegistry(mux *http.ServeMux) {
	s.route(mux, "/v1/auth/nonce", http.MethodPost, s.nonce)
	s.route(mux, "/v1/auth/providers", http.MethodGet, s.providers)
	s.route(mux, "/v1/auth/oidc/{provider}/start", http.MethodGet, s.oidcStart)
	s.route(mux, "/v1/auth/oidc/{provider}/callback", http.MethodGet, s.oidcCallback)
	s.route(mux, "/v1/auth/tickets", http.MethodPost, s.ticket)
	s.route(mux, "/v1/users", http.MethodPost, s.register)
	s.route(mux, "/v1/users/{user_id}", http.MethodGet, s.lookup)
	s.route(mux, "/v1/users/{user_id}/links", http.MethodPost, s.appendLink)
	s.route(mux, "/v1/anchors/batches/{cid}", http.MethodGet, s.batch)
	s.routes(mux, "/v1/rendezvous/{rid}", map[string]http.HandlerFunc{
		http.MethodPost: s.rendezvousPost,
		http.MethodGet:  s.rendezvousGet,
	})
}

// registryError maps the registry's errors to the status and code of
// docs/api.md.
func registryError(err error) (int, string) { return errorStatus(err, registryErrors) }

var registryErrors = []errorCode{
	{keyregistry.ErrTooManyNonces, http.StatusTooManyRequests, wire.CodeTooManyNonces},
	{keyregistry.ErrBadNonce, http.StatusUnauthorized, wire.CodeBadNonce},
	{keyregistry.ErrBadTicket, http.StatusUnauthorized, wire.CodeBadTicket},
	{keyregistry.ErrInvalidProof, http.StatusUnprocessableEntity, wire.CodeInvalidProof},
	{keyregistry.ErrInvalidLink, http.StatusUnprocessableEntity, wire.CodeInvalidLink},
	{keyregistry.ErrStaleChain, http.StatusConflict, wire.CodeStaleChain},
	{keyregistry.ErrAlreadyRegistered, http.StatusConflict, wire.CodeAlreadyRegistered},
	{keyregistry.ErrUserNotFound, http.StatusNotFound, wire.CodeUserNotFound},
	{keyregistry.ErrUnknownProvider, http.StatusNotFound, wire.CodeUnknownProvider},
	{keyregistry.ErrBadLoginID, http.StatusBadRequest, wire.CodeBadLoginID},
	{keyregistry.ErrBadLoginSecret, http.StatusBadRequest, wire.CodeBadLoginSecret},
	{keyregistry.ErrLoginInUse, http.StatusConflict, wire.CodeLoginInUse},
	{keyregistry.ErrTooManyLogins, http.StatusTooManyRequests, wire.CodeTooManyLogins},
	{keyregistry.ErrProviderUnavailable, http.StatusServiceUnavailable, wire.CodeProviderUnavailable},
	{keyregistry.ErrBadState, http.StatusBadRequest, wire.CodeBadState},
	{keyregistry.ErrOIDCExchange, http.StatusBadRequest, wire.CodeOIDCExchange},
	{keyregistry.ErrBadIDToken, http.StatusBadRequest, wire.CodeBadIDToken},
	{keyregistry.ErrMailboxFull, http.StatusTooManyRequests, wire.CodeMailboxFull},
	{keyregistry.ErrTooManyMailboxes, http.StatusTooManyRequests, wire.CodeTooManyMailboxes},
	{keyregistry.ErrMessageTooLarge, http.StatusRequestEntityTooLarge, wire.CodeTooLarge},
	{keyregistry.ErrEmptyMessage, http.StatusBadRequest, wire.CodeBadRequest},
	{keyregistry.ErrBatchNotFound, http.StatusNotFound, wire.CodeBatchNotFound},
	{anchorproof.ErrBadBatch, http.StatusBadRequest, wire.CodeBadCID},
}

func (s *Server) writeRegistryError(w http.ResponseWriter, err error) {
	status, code := registryError(err)
	if status == http.StatusInternalServerError {
		s.log.Error("registry request failed", "err", err)
		WriteError(w, status, code, "internal error")
		return
	}
	WriteError(w, status, code, err.Error())
}

// readJSON decodes a JSON body of at most limit bytes into v, writing the
// error response itself when it fails.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON value")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		WriteError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("body over %d bytes", limit))
		return false
	case err != nil:
		WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) nonce(w http.ResponseWriter, r *http.Request) {
	n, exp, err := s.keys.Nonce(s.clientIP(r))
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.NonceResponse{Nonce: n, ExpiresAt: exp.UTC().Truncate(time.Second)})
}

func (s *Server) providers(w http.ResponseWriter, _ *http.Request) {
	ps := s.keys.Providers()
	out := wire.ProvidersResponse{Providers: make([]wire.Provider, len(ps)), OpenRegistration: s.keys.OpenRegistration()}
	for i, p := range ps {
		out.Providers[i] = wire.Provider{Name: p.Name, Issuer: p.Issuer}
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) oidcStart(w http.ResponseWriter, r *http.Request) {
	u, err := s.keys.StartLogin(r.Context(), r.PathValue("provider"), r.URL.Query().Get("login"))
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Volo</title></head>
<body><h1>{{.Title}}</h1>{{if .Code}}<p>Confirmation code: <strong id="confirmation-code">{{.Code}}</strong></p>{{end}}<p>{{.Message}}</p></body></html>
`))

// writeLoginPage writes the page the browser ends a login on; code is the
// login's confirmation code, "" on a failure.
func writeLoginPage(w http.ResponseWriter, status int, title, code, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, struct{ Title, Code, Message string }{title, code, msg})
}

func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		writeLoginPage(w, http.StatusBadRequest, "Sign-in failed", "", "The provider said: "+e+" "+q.Get("error_description"))
		return
	}
	confirm, err := s.keys.FinishLogin(r.Context(), r.PathValue("provider"), q.Get("code"), q.Get("state"))
	if err != nil {
		status, code := registryError(err)
		if status == http.StatusInternalServerError {
			s.log.Error("OIDC callback failed", "err", err)
		}
		writeLoginPage(w, max(status, http.StatusBadRequest), "Sign-in failed", "", code+": "+err.Error())
		return
	}
	writeLoginPage(w, http.StatusOK, "Signed in", confirm,
		"Volo shows the same confirmation code where you started registering: check that they match, then return to Volo to finish. "+
			"If Volo shows another code, or you did not start registering with Volo, someone else may be trying to use your account: close this page.")
}

func (s *Server) ticket(w http.ResponseWriter, r *http.Request) {
	var req wire.TicketRequest
	if !readJSON(w, r, MaxRegistryBodySize, &req) {
		return
	}
	t, exp, ok, err := s.keys.PollTicket(s.longPoll(r), req.LoginSecret)
	switch {
	case err != nil:
		s.writeRegistryError(w, err)
	case !ok:
		WriteJSON(w, http.StatusAccepted, wire.TicketPending{Status: "pending"})
	default:
		WriteJSON(w, http.StatusOK, wire.TicketResponse{Ticket: t, ExpiresAt: exp.UTC().Truncate(time.Second)})
	}
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req wire.RegisterRequest
	if !readJSON(w, r, MaxRegistryBodySize, &req) {
		return
	}
	c, err := s.keys.Register(r.Context(), req.Genesis, req.Proof, req.Ticket)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, wire.ChainVersion{UserID: c.Set.User().String(), Version: c.Version()})
}

// proofsJSON describes the stored proofs of links.
func proofsJSON(raw [][]byte) []*wire.AnchorProof {
	out := make([]*wire.AnchorProof, len(raw))
	for i, b := range raw {
		if b == nil {
			continue
		}
		p, err := anchorproof.DecodeAnchorProof(b)
		if err != nil {
			continue // the store holds only proofs that decode
		}
		tx, at, _ := p.Inclusion()
		out[i] = &wire.AnchorProof{Proof: b, TxID: tx.String(), Block: at.String(), BlockNo: p.BlockNo,
			BatchCID: p.Cid().String(), LeafIndex: p.LeafIndex, TreeSize: p.TreeSize}
	}
	return out
}

func userID(w http.ResponseWriter, r *http.Request) (ident.UserID, bool) {
	id, err := ident.ParseUserID(r.PathValue("user_id"))
	if err != nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadUserID, err.Error())
		return ident.UserID{}, false
	}
	return id, true
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r)
	if !ok {
		return
	}
	// Fork first: it applies the fork rule again, which may change the
	// chain Lookup returns.
	fork, forked, err := s.keys.Fork(r.Context(), id)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	c, err := s.keys.Lookup(r.Context(), id)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	proofs, err := s.keys.Proofs(id, c.Links)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	out := wire.UserResponse{UserID: id.String(), Version: c.Version(), Links: c.Links, Proofs: proofsJSON(proofs)}
	if forked {
		out.Fork = &wire.ChainFork{At: fork.At, Rule: fork.Rule.String(),
			Kept:  wire.ForkHead{Version: fork.Kept.Version, Link: fork.Kept.Link.String()},
			Other: wire.ForkHead{Version: fork.Other.Version, Link: fork.Other.Link.String()}}
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	c, err := cid.Decode(r.PathValue("cid"))
	if err == nil {
		c, err = anchorproof.ParseBatchCID(c.Bytes())
	}
	if err != nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadCID, fmt.Sprintf("%q is not a batch CID (CIDv1, raw, sha2-256)", r.PathValue("cid")))
		return
	}
	raw, err := s.keys.Batch(c)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(http.StatusOK)
	w.Write(raw)
}

func (s *Server) appendLink(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r)
	if !ok {
		return
	}
	var req wire.AppendLinkRequest
	if !readJSON(w, r, MaxRegistryBodySize, &req) {
		return
	}
	c, err := s.keys.AppendLink(r.Context(), id, req.Link)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.ChainVersion{UserID: id.String(), Version: c.Version()})
}

func rendezvousID(w http.ResponseWriter, r *http.Request) (ident.RendezvousID, bool) {
	rid, err := ident.ParseRendezvousID(r.PathValue("rid"))
	if err != nil {
		WriteError(w, http.StatusBadRequest, wire.CodeBadRendezvousID, err.Error())
		return rid, false
	}
	return rid, true
}

func (s *Server) rendezvousPost(w http.ResponseWriter, r *http.Request) {
	rid, ok := rendezvousID(w, r)
	if !ok {
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, keyregistry.MaxMailboxMessageSize))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		WriteError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("message over %d bytes", keyregistry.MaxMailboxMessageSize))
		return
	case err != nil:
		WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	seq, err := s.keys.PostMessage(rid, data)
	if err != nil {
		s.writeRegistryError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, wire.RendezvousPosted{Seq: seq})
}

func (s *Server) rendezvousGet(w http.ResponseWriter, r *http.Request) {
	rid, ok := rendezvousID(w, r)
	if !ok {
		return
	}
	after := int64(-1)
	if a := r.URL.Query().Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 32)
		if err != nil {
			WriteError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("after=%q is not a sequence number", a))
			return
		}
		after = int64(n)
	}
	msgs := s.keys.WaitMessages(s.longPoll(r), rid, after)
	out := wire.RendezvousMessages{Messages: make([]wire.RendezvousMessage, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = wire.RendezvousMessage{Seq: m.Seq, Data: m.Data}
	}
	WriteJSON(w, http.StatusOK, out)
}
