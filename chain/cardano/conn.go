package cardano

import (
	"context"
	"fmt"
	"net"

	ouroboros "github.com/blinklabs-io/gouroboros"
	pcommon "github.com/blinklabs-io/gouroboros/protocol/common"

	"github.com/volo-chat/volo/chain"
)

// errChanSize is the buffer of a connection's asynchronous error channel.
const errChanSize = 10

// endpoint is where a node listens and how to speak to it.
type endpoint struct {
	network string // "unix" (node-to-client) or "tcp" (node-to-node)
	addr    string
	magic   uint32
}

func (e endpoint) nodeToNode() bool { return e.network == "tcp" }

func (e endpoint) String() string { return e.network + ":" + e.addr }

// conn is one Ouroboros connection and its asynchronous errors.
type conn struct {
	*ouroboros.Connection
	errs chan error
}

// dial connects to e and completes the handshake, or gives up when ctx
// ends.
func dial(ctx context.Context, e endpoint, opts ...ouroboros.ConnectionOptionFunc) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, e.network, e.addr)
	if err != nil {
		return nil, fmt.Errorf("cardano: dial %s: %w", e, err)
	}
	errs := make(chan error, errChanSize)
	all := []ouroboros.ConnectionOptionFunc{
		ouroboros.WithConnection(nc),
		ouroboros.WithNetworkMagic(e.magic),
		ouroboros.WithNodeToNode(e.nodeToNode()),
		ouroboros.WithErrorChan(errs),
		ouroboros.WithKeepAlive(e.nodeToNode()),
	}
	if !e.nodeToNode() {
		// A local socket to a node we trust: no segment read timeout,
		// a state query may take long and the chain may be quiet.
		all = append(all, ouroboros.WithMuxerSegmentReadTimeout(0))
	}
	all = append(all, opts...)
	var oc *ouroboros.Connection
	err = withContext(ctx, func() { nc.Close() }, func() error {
		var err error
		oc, err = ouroboros.NewConnection(all...)
		return err
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cardano: handshake with %s (network magic %d): %w", e, e.magic, err)
	}
	return &conn{Connection: oc, errs: errs}, nil
}

// withContext runs fn, which blocks on the network; when ctx ends first
// it calls abort (closing the connection makes fn return) and returns
// ctx's error.
func withContext(ctx context.Context, abort func(), fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		abort()
		<-done
		return ctx.Err()
	}
}

func toPoint(p chain.Point) pcommon.Point {
	if p.IsOrigin() {
		return pcommon.NewPointOrigin()
	}
	return pcommon.NewPoint(p.Slot, p.Hash)
}

func fromPoint(p pcommon.Point) chain.Point {
	if len(p.Hash) == 0 {
		return chain.Point{}
	}
	return chain.Point{Slot: p.Slot, Hash: append([]byte(nil), p.Hash...)}
}

func samePoint(a, b chain.Point) bool {
	return a.Slot == b.Slot && string(a.Hash) == string(b.Hash)
}
