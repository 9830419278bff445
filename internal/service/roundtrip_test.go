package service

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

var errBad = errors.New("test: bad frame")

var testFraming = Framing{Name: "test", BadFrame: errBad}

func TestFramingRead(t *testing.T) {
	frame := AppendFrame(nil, []byte("hello"))
	tests := []struct {
		name  string
		in    []byte
		limit int
		want  string
		err   error
	}{
		{"frame", frame, 5, "hello", nil},
		{"empty stream", nil, 5, "", io.EOF},
		{"over the limit", frame, 4, "", errBad},
		{"zero length", []byte{0}, 5, "", errBad},
		{"bad length", []byte{0xff}, 5, "", errBad},
		{"truncated", frame[:4], 5, "", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := testFraming.Read(bufio.NewReader(bytes.NewReader(tt.in)), tt.limit, nil)
			if !errors.Is(err, tt.err) || string(b) != tt.want {
				t.Fatalf("Read = %q, %v; want %q, %v", b, err, tt.want, tt.err)
			}
		})
	}
	pooled := make([]byte, 0, 64)
	b, err := testFraming.Read(bufio.NewReader(bytes.NewReader(frame)), 5, func(n int) []byte { return pooled[:n] })
	if err != nil || &b[0] != &pooled[:1][0] {
		t.Fatalf("Read into alloc: %q, %v, not the buffer given", b, err)
	}
}

func TestCodes(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	cs := Codes{{Code: "a", Err: errA}, {Code: "b", Err: errB}}
	if c, ok := cs.CodeOf(fmt.Errorf("context: %w", errB)); !ok || c != "b" {
		t.Fatalf("CodeOf(wrapped b) = %q, %v", c, ok)
	}
	if _, ok := cs.CodeOf(errors.New("other")); ok {
		t.Fatal("CodeOf found a code for an unknown error")
	}
	if err, ok := cs.ErrOf("a"); !ok || err != errA {
		t.Fatalf("ErrOf(a) = %v, %v", err, ok)
	}
	if _, ok := cs.ErrOf("c"); ok {
		t.Fatal("ErrOf found an unknown code")
	}
}

// pipeStream is a stream over one end of a net.Pipe.
type pipeStream struct {
	network.Stream
	conn  net.Conn
	reset atomic.Bool
}

func (s *pipeStream) Read(b []byte) (int, error)         { return s.conn.Read(b) }
func (s *pipeStream) Write(b []byte) (int, error)        { return s.conn.Write(b) }
func (s *pipeStream) Close() error                       { return s.conn.Close() }
func (s *pipeStream) CloseWrite() error                  { return nil }
func (s *pipeStream) Reset() error                       { s.reset.Store(true); return s.conn.Close() }
func (s *pipeStream) SetDeadline(t time.Time) error      { return s.conn.SetDeadline(t) }
func (s *pipeStream) SetReadDeadline(t time.Time) error  { return s.conn.SetReadDeadline(t) }
func (s *pipeStream) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

// server opens pipe streams whose far end serve answers: it reads one
// request frame and writes back what serve returns.
type server struct {
	serve func(req []byte) []byte
	last  *pipeStream
	fail  error
}

func (s *server) NewStream(_ context.Context, _ peer.ID, _ ...protocol.ID) (network.Stream, error) {
	if s.fail != nil {
		return nil, s.fail
	}
	here, there := net.Pipe()
	go func() {
		defer there.Close()
		req, err := testFraming.Read(bufio.NewReader(there), 1024, nil)
		if err != nil {
			return
		}
		there.Write(s.serve(req))
	}()
	s.last = &pipeStream{conn: here}
	return s.last, nil
}

// testReply is one byte of type, then for type 9 "code:message".
type testReply struct {
	kind      uint8
	code, msg string
}

func (r testReply) Kind() uint8 { return r.kind }
func (r testReply) Refusal() (string, string, bool) {
	return r.code, r.msg, r.kind == 9
}

var errRefused = errors.New("test: refused")

func testClient(o StreamOpener) Client[testReply] {
	return Client[testReply]{
		Framing: testFraming, Opener: o, Protocol: "/test/1", Timeout: time.Minute, MaxReply: 64,
		Decode: func(b []byte) (testReply, error) {
			r := testReply{kind: b[0]}
			if r.kind == 9 {
				r.code, r.msg, _ = strings.Cut(string(b[1:]), ":")
			}
			return r, nil
		},
		Refused: func(p peer.ID, code, msg string) error { return fmt.Errorf("%w: %s: %s: %s", errRefused, p, code, msg) },
	}
}

func TestRoundTrip(t *testing.T) {
	write := func(w io.Writer) error { _, err := w.Write(AppendFrame(nil, []byte("ping"))); return err }
	t.Run("reply and body", func(t *testing.T) {
		srv := &server{serve: func(req []byte) []byte {
			if string(req) != "ping" {
				return AppendFrame(nil, []byte{9})
			}
			return AppendFrame(AppendFrame(nil, []byte{2}), []byte("body"))
		}}
		var body []byte
		r, err := testClient(srv).RoundTrip(t.Context(), "p", write, 2, func(br *bufio.Reader, _ testReply) error {
			var err error
			body, err = testFraming.Read(br, 64, nil)
			return err
		})
		if err != nil || r.kind != 2 || string(body) != "body" || srv.last.reset.Load() {
			t.Fatalf("RoundTrip = %+v, %q, %v (reset %v)", r, body, err, srv.last.reset.Load())
		}
	})
	t.Run("error reply", func(t *testing.T) {
		srv := &server{serve: func([]byte) []byte { return AppendFrame(nil, []byte("\x09full:no room")) }}
		_, err := testClient(srv).RoundTrip(t.Context(), "p", write, 2, nil)
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "full: no room") {
			t.Fatalf("RoundTrip = %v, want the refusal", err)
		}
	})
	t.Run("wrong type", func(t *testing.T) {
		srv := &server{serve: func([]byte) []byte { return AppendFrame(nil, []byte{3}) }}
		_, err := testClient(srv).RoundTrip(t.Context(), "p", write, 2, nil)
		if !errors.Is(err, errBad) || !srv.last.reset.Load() {
			t.Fatalf("RoundTrip = %v (reset %v), want a bad frame and a reset", err, srv.last.reset.Load())
		}
	})
	t.Run("reply over the limit", func(t *testing.T) {
		srv := &server{serve: func([]byte) []byte { return AppendFrame(nil, make([]byte, 65)) }}
		_, err := testClient(srv).RoundTrip(t.Context(), "p", write, 2, nil)
		if !errors.Is(err, errBad) || !strings.HasPrefix(err.Error(), "test: read from ") {
			t.Fatalf("RoundTrip = %v, want a bad frame", err)
		}
	})
	t.Run("no stream", func(t *testing.T) {
		down := errors.New("down")
		_, err := testClient(&server{fail: down}).RoundTrip(t.Context(), "p", write, 2, nil)
		if !errors.Is(err, down) || !strings.HasPrefix(err.Error(), "test: open stream to ") {
			t.Fatalf("RoundTrip = %v", err)
		}
	})
}
