package client

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/volo-chat/volo/ident"
)

// closedURL is the URL of a loopback port nothing listens on (it was
// bound and closed).
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// A node nobody answers at is a *NodeUnreachableError naming the node's
// URL, whether the client calls its HTTP API or dials its WebSocket; an
// operation the caller cancelled is not.
func TestNodeUnreachable(t *testing.T) {
	url := closedURL(t)
	api, err := NewAPI(url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, st := testDevice(t)
	user, err := ident.ParseUserID(st.User)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		var nu *NodeUnreachableError
		if !errors.Is(err, ErrNodeUnreachable) || !errors.As(err, &nu) {
			t.Fatalf("%s: %v, want a *NodeUnreachableError", what, err)
		}
		if nu.URL != url || nu.Reason() != "connection refused" {
			t.Fatalf("%s: URL %q, reason %q; want %q, connection refused", what, nu.URL, nu.Reason(), url)
		}
	}
	_, err = api.Chain(t.Context(), user)
	check("GET chain", err)
	_, err = api.Nonce(t.Context())
	check("POST nonce", err)
	_, err = Dial(t.Context(), url, nil, user, keys, false)
	check("WebSocket", err)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := api.Chain(ctx, user); err == nil || errors.Is(err, ErrNodeUnreachable) {
		t.Fatalf("a cancelled request: %v, want an error that is not ErrNodeUnreachable", err)
	}
	if _, err := Dial(ctx, url, nil, user, keys, false); err == nil || errors.Is(err, ErrNodeUnreachable) {
		t.Fatalf("a cancelled dial: %v, want an error that is not ErrNodeUnreachable", err)
	}
}
