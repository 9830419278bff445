package keyregistry

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/volo-chat/volo/ident"
)

func TestNonces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newNonceStore(5*time.Minute, 2, 3)
		n1, exp, err := s.Issue("10.0.0.1")
		if err != nil || len(n1) != NonceSize || !exp.Equal(time.Now().Add(5*time.Minute)) {
			t.Fatalf("issue: %x %v %v", n1, exp, err)
		}
		if err := s.Consume(n1); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if err := s.Consume(n1); !errors.Is(err, ErrBadNonce) {
			t.Fatalf("replay: %v, want ErrBadNonce", err)
		}
		if err := s.Consume(make([]byte, NonceSize)); !errors.Is(err, ErrBadNonce) {
			t.Fatalf("never issued: %v", err)
		}
		if err := s.Consume([]byte("short")); !errors.Is(err, ErrBadNonce) {
			t.Fatalf("wrong size: %v", err)
		}

		// Expiry: valid just before the TTL, refused at it.
		n2, _, _ := s.Issue("10.0.0.1")
		n3, _, _ := s.Issue("10.0.0.2")
		time.Sleep(5*time.Minute - time.Millisecond)
		if err := s.Consume(n3); err != nil {
			t.Fatalf("just before expiry: %v", err)
		}
		time.Sleep(time.Millisecond)
		if err := s.Consume(n2); !errors.Is(err, ErrBadNonce) {
			t.Fatalf("expired nonce: %v, want ErrBadNonce", err)
		}
		if s.Len() != 0 {
			t.Fatalf("%d nonces left", s.Len())
		}

		// Per client, then in all.
		s.Issue("a")
		s.Issue("a")
		if _, _, err := s.Issue("a"); !errors.Is(err, ErrTooManyNonces) {
			t.Fatalf("third for one client: %v", err)
		}
		s.Issue("b")
		if _, _, err := s.Issue("c"); !errors.Is(err, ErrTooManyNonces) {
			t.Fatalf("fourth in all: %v", err)
		}
		// Expired ones free their slots.
		time.Sleep(5 * time.Minute)
		if _, _, err := s.Issue("a"); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	})
}

func TestNonceOrderStaysBounded(t *testing.T) {
	s := newNonceStore(time.Hour, 4, 8)
	for range 1000 {
		n, _, err := s.Issue("a")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Consume(n); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.order) > 2*8 {
		t.Fatalf("order holds %d entries for 0 live nonces", len(s.order))
	}
}

func rid(b byte) ident.RendezvousID {
	var r ident.RendezvousID
	r[0] = b
	return r
}

func TestMailboxes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRendezvous()
		box := rid(1)
		if seq, err := r.Post(box, []byte("m0")); err != nil || seq != 0 {
			t.Fatalf("post: %d %v", seq, err)
		}
		if _, err := r.Post(box, make([]byte, MaxMailboxMessageSize+1)); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("large: %v", err)
		}
		if _, err := r.Post(box, nil); !errors.Is(err, ErrEmptyMessage) {
			t.Fatalf("empty: %v", err)
		}
		for i := 1; i < MaxMailboxMessages; i++ {
			if _, err := r.Post(box, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Post(box, []byte("x")); !errors.Is(err, ErrMailboxFull) {
			t.Fatalf("17th: %v", err)
		}
		msgs := r.Wait(t.Context(), box, -1)
		if len(msgs) != MaxMailboxMessages || string(msgs[0].Data) != "m0" {
			t.Fatalf("got %d messages", len(msgs))
		}
		if got := r.Wait(t.Context(), box, 14); len(got) != 1 || got[0].Seq != 15 {
			t.Fatalf("after 14: %+v", got)
		}

		// A reader waiting on an empty mailbox wakes on the first post.
		other := rid(2)
		done := make(chan []MailboxMessage)
		go func() { done <- r.Wait(context.Background(), other, -1) }()
		synctest.Wait()
		time.Sleep(time.Second)
		r.Post(other, []byte("hello"))
		if got := <-done; len(got) != 1 || string(got[0].Data) != "hello" {
			t.Fatalf("woken with %+v", got)
		}
		// A reader with nothing new returns empty after the long poll.
		start := time.Now()
		if got := r.Wait(context.Background(), other, 0); len(got) != 0 || time.Since(start) != LongPollTimeout {
			t.Fatalf("long poll: %+v after %v", got, time.Since(start))
		}

		// Everything expires MailboxTTL after the first message.
		time.Sleep(MailboxTTL)
		if r.Len() != 0 {
			t.Fatalf("%d mailboxes after expiry", r.Len())
		}
		if got := r.Wait(context.Background(), box, -1); len(got) != 0 {
			t.Fatalf("expired mailbox served %d messages", len(got))
		}
		// The name can be used again, empty.
		if seq, err := r.Post(box, []byte("new")); err != nil || seq != 0 {
			t.Fatalf("reuse: %d %v", seq, err)
		}
	})
}

func TestMailboxCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRendezvous()
		for i := range MaxMailboxes {
			var id ident.RendezvousID
			id[0], id[1] = byte(i), byte(i>>8)
			if _, err := r.Post(id, []byte("x")); err != nil {
				t.Fatalf("mailbox %d: %v", i, err)
			}
		}
		extra := rid(0)
		extra[2] = 1 // not one of the above
		if _, err := r.Post(extra, []byte("x")); !errors.Is(err, ErrTooManyMailboxes) {
			t.Fatalf("one too many: %v", err)
		}
		time.Sleep(MailboxTTL)
		if _, err := r.Post(extra, []byte("x")); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	})
}

func TestLoginsExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLogins()
		acct := Account{Issuer: "https://issuer", Subject: "s"}
		state, _, err := l.begin("p", "login-aaaaaaaaaaaaaaaaaaaa", "verifier")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.takeState("other", state); !errors.Is(err, ErrBadState) {
			t.Fatalf("state of another provider: %v", err)
		}
		// takeState used it up even though the provider was wrong.
		if _, err := l.takeState("p", state); !errors.Is(err, ErrBadState) {
			t.Fatalf("used state: %v", err)
		}
		state, _, _ = l.begin("p", "login-bbbbbbbbbbbbbbbbbbbb", "verifier")
		time.Sleep(LoginTTL)
		if _, err := l.takeState("p", state); !errors.Is(err, ErrBadState) {
			t.Fatalf("expired state: %v", err)
		}

		// A ticket reaches the waiting client once, and expires.
		got := make(chan string)
		go func() {
			tk, _, ok, _ := l.poll(context.Background(), "login-cccccccccccccccccccc")
			if !ok {
				tk = ""
			}
			got <- tk
		}()
		synctest.Wait()
		if err := l.complete("login-cccccccccccccccccccc", acct); err != nil {
			t.Fatal(err)
		}
		tk := <-got
		if tk == "" {
			t.Fatal("no ticket")
		}
		if a, err := l.peekTicket(tk); err != nil || a != acct {
			t.Fatalf("peek: %v %v", a, err)
		}
		if _, _, ok, _ := l.poll(context.Background(), "login-cccccccccccccccccccc"); ok {
			t.Fatal("ticket handed out twice")
		}
		time.Sleep(TicketTTL)
		if _, err := l.takeTicket(tk); !errors.Is(err, ErrBadTicket) {
			t.Fatalf("expired ticket: %v", err)
		}
		if err := l.complete("login-dddddddddddddddddddd", acct); err != nil {
			t.Fatal(err)
		}
		tk2, _, ok, _ := l.poll(context.Background(), "login-dddddddddddddddddddd")
		if !ok {
			t.Fatal("completed login not handed out")
		}
		if _, err := l.takeTicket(tk2); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if _, err := l.takeTicket(tk2); !errors.Is(err, ErrBadTicket) {
			t.Fatalf("second use: %v", err)
		}
	})
}
