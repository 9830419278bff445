package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Connect dials the node once and authenticates, for a short session
// (send, then close) that does not read deliveries; Run keeps a receiving
// connection up by itself. Connect while a connection is live (of an
// earlier Connect or of Run) keeps it and returns nil; after its
// connection ended, Connect dials a new one. Run called after Connect
// replaces Connect's connection with its own and closes the old one.
func (ch *Chat) Connect(ctx context.Context) error {
	if ch.liveConn() != nil {
		return nil
	}
	conn, err := Dial(ctx, ch.c.api.URL(), ch.c.hc, ch.self.User, ch.keys, false)
	if err != nil {
		return err
	}
	ch.connMu.Lock()
	if ch.conn != nil && ch.conn.Err() == nil {
		// Another Connect or Run got there first: keep theirs.
		ch.connMu.Unlock()
		conn.Close()
		return nil
	}
	old := ch.setConnLocked(conn)
	ch.connMu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// liveConn returns the current connection if it is open, else nil.
func (ch *Chat) liveConn() *Conn {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	if ch.conn != nil && ch.conn.Err() == nil {
		return ch.conn
	}
	return nil
}

// setConnLocked makes conn (not nil) the current connection and returns
// the one it replaces, which the caller closes. ch.connMu is held; connCh
// is closed exactly while a connection is set.
func (ch *Chat) setConnLocked(conn *Conn) *Conn {
	old := ch.conn
	if old == nil {
		close(ch.connCh)
	}
	ch.conn = conn
	if old == conn {
		return nil
	}
	return old
}

// clearConn forgets conn if it is still the current connection.
func (ch *Chat) clearConn(conn *Conn) {
	ch.connMu.Lock()
	defer ch.connMu.Unlock()
	if ch.conn == conn {
		ch.conn = nil
		ch.connCh = make(chan struct{})
	}
}

// currentConn waits for a live connection.
func (ch *Chat) currentConn(ctx context.Context) (*Conn, error) {
	for {
		ch.connMu.Lock()
		conn, wait := ch.conn, ch.connCh
		ch.connMu.Unlock()
		if conn != nil && conn.Err() == nil {
			return conn, nil
		}
		select {
		case <-wait:
			if conn != nil {
				// the old one died; wait for Run to replace it
				if err := sleep(ctx, ReconnectBackoff); err != nil {
					return nil, fmt.Errorf("client: no connection to the node: %w", err)
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("client: no connection to the node: %w", ctx.Err())
		}
	}
}

// Run keeps a connection to the node until ctx ends: it receives, stores,
// acknowledges and reports incoming messages, sends the outbox (at once on
// every connect, when Queue adds to it, and every RetryInterval while
// something is left), and reconnects (with backoff) when the connection
// drops, telling the OnConnection functions each time. A connection of an
// earlier Connect is replaced by Run's own (and closed); sends use Run's
// connection from then on. One Run at a time: a second one while the first
// is going returns ErrChatRunning at once. Run ends with ErrSuperseded when
// a newer session of this device takes the node's session over.
func (ch *Chat) Run(ctx context.Context) error {
	ch.connMu.Lock()
	if ch.running {
		ch.connMu.Unlock()
		return ErrChatRunning
	}
	ch.running = true
	ch.connMu.Unlock()
	defer func() {
		ch.connMu.Lock()
		ch.running = false
		ch.connMu.Unlock()
	}()
	backoff := ReconnectBackoff
	node := ch.c.api.URL()
	down := false // a drop was reported and no connect since
	for {
		conn, err := Dial(ctx, node, ch.c.hc, ch.self.User, ch.keys, true)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrAuthRefused) {
				return err
			}
			if !down {
				ch.notifyConn(ConnEvent{Node: node, Err: err})
				down = true
			}
			ch.log.Warn("connect failed", "node", node, "err", err)
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(backoff*2, MaxReconnectBackoff)
			continue
		}
		backoff = ReconnectBackoff
		ch.connMu.Lock()
		old := ch.setConnLocked(conn)
		ch.connMu.Unlock()
		if old != nil {
			old.Close()
		}
		down = false
		ch.notifyConn(ConnEvent{Connected: true, Node: node})
		fctx, stopFlush := context.WithCancel(ctx)
		flushed := make(chan struct{})
		go func() {
			defer close(flushed)
			ch.flushLoop(fctx, conn)
		}()
		err = ch.serve(ctx, conn, 0, nil)
		stopFlush()
		<-flushed
		ch.clearConn(conn)
		conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrSuperseded) {
			ch.notifyConn(ConnEvent{Node: node, Err: err})
			return err
		}
		ch.notifyConn(ConnEvent{Node: node, Err: err})
		down = true
		ch.log.Info("connection ended, reconnecting", "err", err)
	}
}

// flushLoop sends the outbox over conn now, whenever Queue adds to it,
// ReceiptDelay after received messages ask for a receipt, and every
// RetryInterval while entries are left, until ctx ends or conn drops.
func (ch *Chat) flushLoop(ctx context.Context, conn *Conn) {
	var receipt <-chan time.Time // armed while receipts wait
	for {
		ch.sendMu.Lock()
		err := ch.flushLocked(ctx, conn, nil)
		ch.sendMu.Unlock()
		if err != nil && ctx.Err() == nil {
			ch.log.Info("outbox not sent", "err", err)
		}
		receipt = nil
		ch.mu.Lock()
		left := len(ch.st.queue) > 0 || len(ch.receipts) > 0
		ch.mu.Unlock()
		var retry <-chan time.Time
		if left {
			retry = time.After(RetryInterval)
		}
	wait:
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			return
		case <-ch.kick:
		case <-ch.receiptKick:
			// Receipts wait a little, so that one confirms many messages.
			if receipt == nil {
				receipt = time.After(ReceiptDelay)
			}
			goto wait
		case <-receipt:
		case <-retry:
		}
	}
}

// Fetch connects, sends what the outbox holds, receives what the node
// delivers until nothing more comes for idle, acknowledges it, waits for
// the sends (and the delivery receipts of what it received) to end, and
// returns the new messages. The functions of OnMessage see them too.
func (ch *Chat) Fetch(ctx context.Context, idle time.Duration) ([]ChatMessage, error) {
	conn, err := Dial(ctx, ch.c.api.URL(), ch.c.hc, ch.self.User, ch.keys, true)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch.connMu.Lock()
	old := ch.setConnLocked(conn)
	ch.connMu.Unlock()
	if old != nil {
		old.Close()
	}
	defer ch.clearConn(conn)
	flush := func() error {
		ch.sendMu.Lock()
		defer ch.sendMu.Unlock()
		return ch.flushLocked(ctx, conn, nil)
	}
	if err := flush(); err != nil {
		ch.log.Info("outbox not sent", "err", err)
	}
	var got []ChatMessage
	if err := ch.serve(ctx, conn, idle, func(m ChatMessage) { got = append(got, m) }); err != nil && ctx.Err() == nil {
		return got, err
	}
	if err := flush(); err != nil {
		ch.log.Info("outbox not sent", "err", err)
	}
	ch.waitSends(ctx)
	return got, nil
}

// waitSends waits until no send of the outbox is in flight, or ctx ends.
func (ch *Chat) waitSends(ctx context.Context) {
	for {
		ch.mu.Lock()
		var att *attempt
		for _, a := range ch.attempts {
			att = a
			break
		}
		ch.mu.Unlock()
		if att == nil {
			return
		}
		select {
		case <-att.done:
		case <-ctx.Done():
			return
		}
	}
}

// Flush sends now what waits (the outbox, and the delivery receipts Run
// holds back for ReceiptDelay) over the live connection, and waits until
// nothing is in flight or ctx ends. Call it before ending Run, so that
// the receipts of the last messages received go out.
func (ch *Chat) Flush(ctx context.Context) error {
	conn := ch.liveConn()
	if conn == nil {
		return errNoConn
	}
	ch.sendMu.Lock()
	err := ch.flushLocked(ctx, conn, nil)
	ch.sendMu.Unlock()
	ch.waitSends(ctx)
	return err
}

// WaitSent waits until the outbox has nothing in flight (the sends written
// so far ended, sent, failed or left pending), or ctx ends.
func (ch *Chat) WaitSent(ctx context.Context) { ch.waitSends(ctx) }

// serve processes deliveries until the connection ends or, with idle > 0,
// until none came for idle. sink, if not nil, gets every new message
// after the OnMessage functions.
func (ch *Chat) serve(ctx context.Context, conn *Conn, idle time.Duration, sink func(ChatMessage)) error {
	var timer <-chan time.Time
	for {
		if idle > 0 {
			timer = time.After(idle)
		}
		select {
		case envs, ok := <-conn.Deliveries():
			if !ok {
				return conn.Err()
			}
			if err := ch.receive(ctx, conn, envs, sink); err != nil {
				return err
			}
		case <-timer:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
