package service

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Framing is a protocol's length-prefixed framing: a frame is a uvarint
// length, then that many bytes. Name prefixes errors (the service's
// package name); BadFrame is the protocol's sentinel for a frame that
// breaks the framing or its limits, wrapped by such errors.
type Framing struct {
	Name     string
	BadFrame error
}

// AppendFrame appends b with its uvarint length prefix to buf.
func AppendFrame(buf, b []byte) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(b))), b...)
}

// Read reads one frame of 1 to limit bytes into a buffer from alloc (nil:
// a new slice). It returns io.EOF, unwrapped, when the stream ends before
// the frame starts.
func (f Framing) Read(r *bufio.Reader, limit int, alloc func(n int) []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%w: length: %v", f.BadFrame, err)
	}
	if n == 0 || n > uint64(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", f.BadFrame, n, limit)
	}
	var b []byte
	if alloc != nil {
		b = alloc(int(n))
	} else {
		b = make([]byte, n)
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%s: read frame: %w", f.Name, err)
	}
	return b, nil
}

// StreamOpener opens streams to peers; libp2p's host.Host is one.
type StreamOpener interface {
	NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error)
}

// Reply is what a round trip needs to know of a decoded reply.
type Reply interface {
	// Kind is the reply's message type.
	Kind() uint8
	// Refusal is the code and message of an error reply; ok is false for
	// every other reply.
	Refusal() (code, message string, ok bool)
}

// Client is the asking side of a protocol whose streams carry one request
// and one reply, the reply starting with a frame (its header) that Decode
// turns into an R.
type Client[R Reply] struct {
	Framing
	// Opener opens the streams.
	Opener StreamOpener
	// Protocol is the protocol ID the streams speak.
	Protocol protocol.ID
	// Timeout bounds one exchange, dial included.
	Timeout time.Duration
	// MaxReply bounds the reply's header frame.
	MaxReply int
	// Decode decodes and checks a reply header.
	Decode func([]byte) (R, error)
	// Refused is the error of an error reply from p: the error its code
	// stands for, with p and the message.
	Refused func(p peer.ID, code, message string) error
}

// RoundTrip opens a stream to p, writes the request with write, closes its
// write side and reads the reply, which must be of type want or an error
// reply (returned as Refused's error). When the reply is of type want and
// rest is not nil, rest reads what follows its header. A stream that fails
// or breaks the protocol is reset.
func (c Client[R]) RoundTrip(ctx context.Context, p peer.ID, write func(io.Writer) error, want uint8, rest func(*bufio.Reader, R) error) (R, error) {
	var zero R
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	st, err := c.Opener.NewStream(ctx, p, c.Protocol)
	if err != nil {
		return zero, fmt.Errorf("%s: open stream to %s: %w", c.Name, p, err)
	}
	defer st.Close()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	if err := write(st); err != nil {
		st.Reset()
		return zero, fmt.Errorf("%s: write to %s: %w", c.Name, p, err)
	}
	st.CloseWrite()
	br := bufio.NewReader(st)
	b, err := c.Read(br, c.MaxReply, nil)
	if err != nil {
		st.Reset()
		return zero, fmt.Errorf("%s: read from %s: %w", c.Name, p, err)
	}
	r, err := c.Decode(b)
	if err != nil {
		st.Reset()
		return zero, fmt.Errorf("%s: reply from %s: %w", c.Name, p, err)
	}
	if code, msg, ok := r.Refusal(); ok {
		return zero, c.Refused(p, code, msg)
	}
	if r.Kind() != want {
		st.Reset()
		return zero, fmt.Errorf("%w: reply type %d from %s, want %d", c.BadFrame, r.Kind(), p, want)
	}
	if rest != nil {
		if err := rest(br, r); err != nil {
			st.Reset()
			return zero, err
		}
	}
	return r, nil
}

// Code pairs a wire error code with the error it stands for.
type Code struct {
	Code string
	Err  error
}

// Codes is a protocol's table of error codes, searched in order.
type Codes []Code

// CodeOf returns the code of the first entry whose error err is (by
// errors.Is), or false when there is none.
func (cs Codes) CodeOf(err error) (string, bool) {
	for _, c := range cs {
		if errors.Is(err, c.Err) {
			return c.Code, true
		}
	}
	return "", false
}

// ErrOf returns the error code stands for, or false when the table does
// not have code.
func (cs Codes) ErrOf(code string) (error, bool) {
	for _, c := range cs {
		if c.Code == code {
			return c.Err, true
		}
	}
	return nil, false
}
