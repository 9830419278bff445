package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Limits and timings of talking to a node (docs/api.md).
const (
	// MaxResponseSize bounds a response body the client reads: a chain of
	// ident.MaxChainLinks links of ident.MaxLinkSize bytes in base64 fits.
	MaxResponseSize = 4 << 20
	// LongPollTimeout bounds one long-poll request; the node answers
	// within 25 s.
	LongPollTimeout = 40 * time.Second
	// RequestTimeout bounds every other request.
	RequestTimeout = 30 * time.Second
	// PollInterval is the pause before polling again after a long poll
	// ended without news, and between chain fetches while waiting for a
	// change.
	PollInterval = 500 * time.Millisecond
)

// Error codes of the node API that callers branch on (the full list is
// in package wire).
const (
	CodeBadNonce          = wire.CodeBadNonce
	CodeBadTicket         = wire.CodeBadTicket
	CodeAlreadyRegistered = wire.CodeAlreadyRegistered
	CodeUserNotFound      = wire.CodeUserNotFound
	CodeStaleChain        = wire.CodeStaleChain
	CodeInvalidLink       = wire.CodeInvalidLink
	CodeUnknownProvider   = wire.CodeUnknownProvider
	CodeMailboxFull       = wire.CodeMailboxFull
)

// APIError is an error answer of a node: its HTTP status and the code and
// message of its JSON error body.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("node answered %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// ErrNodeUnreachable is what every *NodeUnreachableError is (errors.Is).
var ErrNodeUnreachable = errors.New("client: cannot reach the node")

// NodeUnreachableError reports that no connection to a node could be made
// (connection refused, unknown host, dial timeout, ...): the node is down
// or the URL names the wrong place. Errors after a connection was made are
// not NodeUnreachableErrors.
type NodeUnreachableError struct {
	// URL is the node's base URL as the client was given it.
	URL string
	// Err is the dial error.
	Err error
}

func (e *NodeUnreachableError) Error() string {
	return fmt.Sprintf("client: cannot reach the node at %s (%s)", e.URL, e.Reason())
}

// Reason says in a few words why the connection failed, e.g.
// "connection refused" or "no such host".
func (e *NodeUnreachableError) Reason() string {
	var dnsErr *net.DNSError
	if errors.As(e.Err, &dnsErr) {
		if dnsErr.IsNotFound {
			return "no such host"
		}
		return dnsErr.Err
	}
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(e.Err, &ne) && ne.Timeout() {
		return "timed out"
	}
	var op *net.OpError
	if errors.As(e.Err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return e.Err.Error()
}

func (e *NodeUnreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNodeUnreachable) hold.
func (e *NodeUnreachableError) Is(target error) bool { return target == ErrNodeUnreachable }

// nodeUnreachable returns err as a *NodeUnreachableError of nodeURL when
// it is a failure to connect (and not ctx's cancellation), else nil.
func nodeUnreachable(ctx context.Context, nodeURL string, err error) error {
	var nu *NodeUnreachableError
	if errors.As(err, &nu) {
		return nu
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	var op *net.OpError
	var dnsErr *net.DNSError
	if (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &dnsErr) {
		return &NodeUnreachableError{URL: nodeURL, Err: err}
	}
	return nil
}

// dialErrors is the transport of an API's HTTP client: it turns failures
// to connect into *NodeUnreachableError, once for every request the API
// sends.
type dialErrors struct {
	base    http.RoundTripper
	nodeURL string
}

func (t dialErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		if nu := nodeUnreachable(req.Context(), t.nodeURL, err); nu != nil {
			return nil, nu
		}
	}
	return resp, err
}

// API talks to one node's client API. It never sends anything secret:
// only public keys, signatures and ciphertext.
type API struct {
	base *url.URL
	hc   *http.Client
}

// NewAPI returns a client of the node at base (for example
// "http://127.0.0.1:8080"), using hc (http.DefaultClient if nil). A
// request that cannot connect fails with a *NodeUnreachableError naming
// base.
func NewAPI(base string, hc *http.Client) (*API, error) {
	u, err := ParseNodeURL(base)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	wrapped := *hc
	wrapped.Transport = dialErrors{base: rt, nodeURL: u.String()}
	return &API{base: u, hc: &wrapped}, nil
}

// ParseNodeURL checks that s is an http or https URL without query or
// fragment and returns it without a trailing slash.
func ParseNodeURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: node URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: node URL %q: want http(s)://host[:port][/path]", s)
	}
	return u, nil
}

// URL returns the node's base URL.
func (a *API) URL() string { return a.base.String() }

func (a *API) endpoint(path string, query url.Values) string {
	u := *a.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	return u.String()
}

// do sends one request and decodes a JSON answer into out when the status
// is one of ok. Any other status is an *APIError. It returns the status.
func (a *API) do(ctx context.Context, timeout time.Duration, method, path string, query url.Values, contentType string, body []byte, out any, ok ...int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.endpoint(path, query), rd)
	if err != nil {
		return 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	if len(data) > MaxResponseSize {
		return resp.StatusCode, fmt.Errorf("client: %s %s: answer larger than %d bytes", method, path, MaxResponseSize)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			if out != nil {
				if err := json.Unmarshal(data, out); err != nil {
					return resp.StatusCode, fmt.Errorf("client: %s %s: bad answer: %w", method, path, err)
				}
			}
			return resp.StatusCode, nil
		}
	}
	ae := parseError(resp.StatusCode, data)
	return resp.StatusCode, fmt.Errorf("client: %s %s: %w", method, path, ae)
}

// maxErrorMessage bounds the message of an APIError taken from a body
// that is not the node's JSON error form.
const maxErrorMessage = 200

// parseError reads a node's error answer: the JSON error body of
// docs/api.md, or, from something else (a proxy's page), the status and
// the start of the body.
func parseError(status int, data []byte) *APIError {
	var eb wire.ErrorResponse
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		return &APIError{Status: status, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	return &APIError{Status: status, Code: "http_" + strconv.Itoa(status), Message: strings.ToValidUTF8(strings.TrimSpace(string(data[:min(len(data), maxErrorMessage)])), "?")}
}

// Providers lists the node's OAuth providers and whether it registers
// without one.
func (a *API) Providers(ctx context.Context) (wire.ProvidersResponse, error) {
	var p wire.ProvidersResponse
	_, err := a.do(ctx, RequestTimeout, http.MethodGet, "/v1/auth/providers", nil, "", nil, &p, http.StatusOK)
	return p, err
}

// Nonce asks the node for a registration nonce.
func (a *API) Nonce(ctx context.Context) ([]byte, error) {
	var out wire.NonceResponse
	if _, err := a.do(ctx, RequestTimeout, http.MethodPost, "/v1/auth/nonce", nil, "", nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if len(out.Nonce) < ident.MinRegistrationNonceSize || len(out.Nonce) > ident.MaxRegistrationNonceSize {
		return nil, fmt.Errorf("client: node gave a nonce of %d bytes", len(out.Nonce))
	}
	return out.Nonce, nil
}

// LoginURL is the address the person's browser opens to log in with
// provider; loginID is wire.LoginID of the secret the client then polls
// with.
func (a *API) LoginURL(provider, loginID string) string {
	return a.endpoint("/v1/auth/oidc/"+url.PathEscape(provider)+"/start", url.Values{"login": {loginID}})
}

// WaitTicket long-polls for the registration ticket of the login started
// with the login ID of secret until the login completes or ctx ends.
func (a *API) WaitTicket(ctx context.Context, secret string) (string, error) {
	body, err := json.Marshal(wire.TicketRequest{LoginSecret: secret})
	if err != nil {
		return "", err
	}
	for {
		var out wire.TicketResponse
		status, err := a.do(ctx, LongPollTimeout, http.MethodPost, "/v1/auth/tickets", nil, "application/json", body, &out, http.StatusOK, http.StatusAccepted)
		if err != nil {
			return "", err
		}
		if status == http.StatusOK {
			if out.Ticket == "" {
				return "", errors.New("client: node answered an empty ticket")
			}
			return out.Ticket, nil
		}
		if err := sleep(ctx, PollInterval); err != nil {
			return "", fmt.Errorf("client: waiting for the login: %w", err)
		}
	}
}

// Register submits a genesis link and registration proof (and the ticket of
// an OAuth login, or "" on a node with open registration). It returns the
// user ID the node answered.
func (a *API) Register(ctx context.Context, genesis, proof []byte, ticket string) (ident.UserID, error) {
	body, err := json.Marshal(wire.RegisterRequest{Genesis: genesis, Proof: proof, Ticket: ticket})
	if err != nil {
		return ident.UserID{}, fmt.Errorf("client: encode registration: %w", err)
	}
	var out wire.ChainVersion
	if _, err := a.do(ctx, RequestTimeout, http.MethodPost, "/v1/users", nil, "application/json", body, &out, http.StatusCreated); err != nil {
		return ident.UserID{}, err
	}
	id, err := ident.ParseUserID(out.UserID)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("client: node answered user ID %q: %w", out.UserID, err)
	}
	return id, nil
}

// Chain fetches the encoded links of a user's chain. The caller verifies
// them (ident.DecodeChain); the node is not trusted.
func (a *API) Chain(ctx context.Context, user ident.UserID) ([][]byte, error) {
	var out wire.UserResponse
	if _, err := a.do(ctx, RequestTimeout, http.MethodGet, "/v1/users/"+user.String(), nil, "", nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out.Links, nil
}

// AppendLink submits one add-device or revoke-device link.
func (a *API) AppendLink(ctx context.Context, user ident.UserID, link []byte) error {
	body, err := json.Marshal(wire.AppendLinkRequest{Link: link})
	if err != nil {
		return fmt.Errorf("client: encode link: %w", err)
	}
	_, err = a.do(ctx, RequestTimeout, http.MethodPost, "/v1/users/"+user.String()+"/links", nil, "application/json", body, nil, http.StatusOK)
	return err
}

// PostRendezvous puts one sealed linking message into the mailbox rid and
// returns its sequence number there.
func (a *API) PostRendezvous(ctx context.Context, rid ident.RendezvousID, msg []byte) (int64, error) {
	var out wire.RendezvousPosted
	_, err := a.do(ctx, RequestTimeout, http.MethodPost, "/v1/rendezvous/"+rid.String(), nil, "application/octet-stream", msg, &out, http.StatusCreated)
	return int64(out.Seq), err
}

// GetRendezvous long-polls the mailbox rid for the messages after seq
// (after < 0: all of them). The answer may be empty.
func (a *API) GetRendezvous(ctx context.Context, rid ident.RendezvousID, after int64) ([]wire.RendezvousMessage, error) {
	q := url.Values{}
	if after >= 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	var out wire.RendezvousMessages
	_, err := a.do(ctx, LongPollTimeout, http.MethodGet, "/v1/rendezvous/"+rid.String(), q, "", nil, &out, http.StatusOK)
	return out.Messages, err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
