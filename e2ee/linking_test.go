package e2ee

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func fixedLinkingCode(t testing.TB) LinkingCode {
	t.Helper()
	c, err := NewLinkingCode(detRand("linking code"))
	if err != nil {
		t.Fatal(err)
	}
	c.Node = "https://node1.volo.example:8443/"
	return c
}

func TestLinkingCodeForms(t *testing.T) {
	c := fixedLinkingCode(t)
	text := c.Text()
	if len(text) != 35+6 || strings.Count(text, "-") != 6 {
		t.Fatalf("text %q", text)
	}
	for _, s := range []string{
		text,
		strings.ToUpper(text),
		strings.ReplaceAll(text, "-", " "),
		strings.ReplaceAll(text, "-", ""),
		"  " + strings.ReplaceAll(text, "-", "\t") + "\n",
	} {
		p, err := ParseLinkingCode(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if p.Node != "" || !bytes.Equal(p.SessionKey(), c.SessionKey()) {
			t.Fatalf("%q: different code", s)
		}
	}
	qr := c.QR()
	if !strings.HasPrefix(qr, "volo-link:v1:") {
		t.Fatalf("qr %q", qr)
	}
	p, err := ParseLinkingCode(qr)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(c) {
		t.Fatal("QR round trip")
	}
	bare := c
	bare.Node = ""
	if p, err := ParseLinkingCode(bare.QR()); err != nil || !p.Equal(bare) || strings.Contains(bare.QR(), "?") {
		t.Fatalf("QR without node: %v", err)
	}
	// The secret never shows in String or %v.
	for _, out := range []string{c.String(), strings.Join([]string{c.GoString()}, "")} {
		if strings.Contains(out, text[:5]) {
			t.Fatalf("String prints the secret: %s", out)
		}
	}
}

func TestLinkingCodeTypos(t *testing.T) {
	c := fixedLinkingCode(t)
	compact := strings.ReplaceAll(c.Text(), "-", "")
	// Every single-character substitution is caught, as a checksum error.
	missed := 0
	for i := range compact {
		for _, r := range linkingAlphabet {
			if byte(r) == compact[i] {
				continue
			}
			typo := compact[:i] + string(r) + compact[i+1:]
			_, err := ParseLinkingCode(typo)
			if err == nil {
				missed++
				continue
			}
			if !errors.Is(err, ErrLinkingCodeChecksum) {
				t.Fatalf("typo at %d: %v", i, err)
			}
		}
	}
	// A 15-bit checksum lets through about one random change in 32768.
	if missed > 2 {
		t.Fatalf("%d of %d single-character typos accepted", missed, len(compact)*31)
	}
	// Swapped neighbours.
	for i := 0; i+1 < len(compact); i++ {
		if compact[i] == compact[i+1] {
			continue
		}
		sw := compact[:i] + string(compact[i+1]) + string(compact[i]) + compact[i+2:]
		if _, err := ParseLinkingCode(sw); !errors.Is(err, ErrLinkingCodeChecksum) {
			t.Errorf("swap at %d: %v", i, err)
		}
	}
	bad := map[string]string{
		"empty":         "",
		"too short":     compact[:34],
		"too long":      compact + "a",
		"digit 0":       "0" + compact[1:],
		"digit 1":       compact[:5] + "1" + compact[6:],
		"punctuation":   compact[:5] + "." + compact[6:],
		"unicode":       compact[:5] + "é" + compact[6:],
		"unknown query": "volo-link:v1:" + compact + "?evil=1",
		"two nodes":     "volo-link:v1:" + compact + "?node=a&node=b",
		"empty node":    "volo-link:v1:" + compact + "?node=",
		"space in node": "volo-link:v1:" + compact + "?node=a%20b",
		"long node":     "volo-link:v1:" + compact + "?node=" + strings.Repeat("a", MaxLinkingNodeLength+1),
		"huge input":    strings.Repeat("a", 1<<20),
	}
	for name, s := range bad {
		if _, err := ParseLinkingCode(s); !errors.Is(err, ErrBadLinkingCode) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseLinkingCode("0" + compact[1:]); err == nil || !strings.Contains(err.Error(), "did you mean o") {
		t.Errorf("no hint for 0: %v", err)
	}
}

func TestLinkingDerivations(t *testing.T) {
	a, _ := NewLinkingCode(rand.Reader)
	b, _ := NewLinkingCode(rand.Reader)
	rv := a.Rendezvous()
	if bytes.Equal(a.SessionKey(), b.SessionKey()) || a.Rendezvous() == b.Rendezvous() {
		t.Fatal("two codes, same keys")
	}
	if bytes.Equal(rv[:], a.SessionKey()) || len(a.SessionKey()) != LinkingSessionKeySize {
		t.Fatal("rendezvous equals S")
	}
	p, err := ident.ParseRendezvousID(rv.String())
	if err != nil || p != rv {
		t.Fatalf("rendezvous round trip: %v", err)
	}
	if _, err := ident.ParseRendezvousID(strings.ToUpper(rv.String())); !errors.Is(err, ident.ErrBadID) {
		t.Fatalf("upper-case rendezvous: %v", err)
	}
}

func newLinkingPair(t testing.TB, c LinkingCode) (*LinkingSession, *LinkingSession) {
	t.Helper()
	old, err := NewLinkingSession(c, LinkingExistingDevice)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := NewLinkingSession(c, LinkingNewDevice)
	if err != nil {
		t.Fatal(err)
	}
	return old, nw
}

// TestLinkingFlow runs the whole two-party device linking of the design:
// the existing device shows the code, the new device reads it, they
// exchange the chain head, the signed request and the signed link.
func TestLinkingFlow(t *testing.T) {
	f := newChainFixture(t)
	existing := f.c // active in the fixture's final chain
	newKeys := fixedDeviceKeys(t, "alice new phone")

	code, _ := NewLinkingCode(rand.Reader)
	code.Node = "/dns4/node.example/tcp/4001"
	shown := code.QR()

	// New device reads the QR code.
	read, err := ParseLinkingCode(shown)
	if err != nil {
		t.Fatal(err)
	}
	oldSide, err := NewLinkingSession(code, LinkingExistingDevice)
	if err != nil {
		t.Fatal(err)
	}
	newSide, err := NewLinkingSession(read, LinkingNewDevice)
	if err != nil {
		t.Fatal(err)
	}
	if oldSide.Rendezvous() != newSide.Rendezvous() {
		t.Fatal("rendezvous differs")
	}

	m1, err := oldSide.Seal(f.last().Head().Encode())
	if err != nil {
		t.Fatal(err)
	}
	p1, err := newSide.Open(m1)
	if err != nil {
		t.Fatal(err)
	}
	head, err := ident.DecodeChainHead(p1)
	if err != nil {
		t.Fatal(err)
	}
	req, err := NewAddDeviceRequest(head, newKeys)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := newSide.Seal(req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	p2, err := oldSide.Open(m2)
	if err != nil {
		t.Fatal(err)
	}
	gotReq, err := ident.DecodeAddDeviceRequest(p2)
	if err != nil {
		t.Fatal(err)
	}
	link, err := NewAddDevice(f.last(), existing, gotReq, testTime(1000))
	if err != nil {
		t.Fatal(err)
	}
	m3, err := oldSide.Seal(link.Encode())
	if err != nil {
		t.Fatal(err)
	}
	p3, err := newSide.Open(m3)
	if err != nil {
		t.Fatal(err)
	}
	gotLink, err := ident.DecodeLink(p3)
	if err != nil {
		t.Fatal(err)
	}
	// The node verifies the submitted link against the chain it holds.
	set, err := f.last().Apply(gotLink)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.Lookup(newKeys.ID()); !ok || set.Len() != 3 {
		t.Fatal("new device not in the chain")
	}
}

func TestLinkingMessageFailures(t *testing.T) {
	c := fixedLinkingCode(t)
	old, nw := newLinkingPair(t, c)
	m0, _ := old.Seal([]byte("first"))
	m1, _ := old.Seal([]byte("second"))

	t.Run("wrong S", func(t *testing.T) {
		other, _ := NewLinkingCode(rand.Reader)
		_, stranger := newLinkingPair(t, other)
		if _, err := stranger.Open(m0); !errors.Is(err, ErrLinkingKey) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("reflected", func(t *testing.T) {
		if _, err := old.Open(m0); !errors.Is(err, ErrLinkingReflected) {
			t.Fatalf("got %v", err)
		}
		// Junk claiming this side's role is not a reflection: only a
		// message sealed with S tells that the code was used twice.
		forged := bytes.Clone(m0)
		forged[len(forged)-1] ^= 1
		if _, err := old.Open(forged); !errors.Is(err, ErrTampered) || errors.Is(err, ErrLinkingReflected) {
			t.Fatalf("forged reflection: %v", err)
		}
		// Rewriting the role byte does not help: the nonce and AAD change.
		r := bytes.Clone(m0)
		r[1] = byte(LinkingNewDevice)
		if _, err := old.Open(r); !errors.Is(err, ErrTampered) {
			t.Fatalf("role rewritten: %v", err)
		}
	})
	t.Run("skipped", func(t *testing.T) {
		if _, err := nw.Open(m1); !errors.Is(err, ErrLinkingOrder) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tampered byte anywhere", func(t *testing.T) {
		for pos := range m0 {
			mod := bytes.Clone(m0)
			mod[pos] ^= 0x20
			if _, err := nw.Open(mod); err == nil {
				t.Fatalf("byte %d: accepted", pos)
			}
		}
		if _, err := nw.Open(m0[:len(m0)-1]); !errors.Is(err, ErrTampered) {
			t.Fatalf("truncated: %v", err)
		}
	})
	t.Run("in order then replay", func(t *testing.T) {
		if p, err := nw.Open(m0); err != nil || string(p) != "first" {
			t.Fatalf("m0: %v", err)
		}
		if _, err := nw.Open(m0); !errors.Is(err, ErrLinkingReplay) {
			t.Fatalf("replay: %v", err)
		}
		if p, err := nw.Open(m1); err != nil || string(p) != "second" {
			t.Fatalf("m1: %v", err)
		}
	})
	t.Run("too big", func(t *testing.T) {
		if _, err := old.Seal(make([]byte, MaxLinkingMessageSize)); !errors.Is(err, ident.ErrMalformed) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("too many", func(t *testing.T) {
		s, _ := newLinkingPair(t, c)
		for range MaxLinkingMessages {
			if _, err := s.Seal(nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Seal(nil); !errors.Is(err, ErrLinkingOrder) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestDecodeChainHeadRejects(t *testing.T) {
	f := newChainFixture(t)
	h := f.last().Head()
	got, err := ident.DecodeChainHead(h.Encode())
	if err != nil || got != h {
		t.Fatalf("round trip: %v", err)
	}
	zero := h
	zero.Version = 0
	if _, err := ident.DecodeChainHead(zero.Encode()); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("version 0: %v", err)
	}
	if _, err := ident.DecodeChainHead(h.Encode()[1:]); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("cut: %v", err)
	}
}

type linkingVector struct {
	Secret     string   `json:"secret"`
	Node       string   `json:"node"`
	Text       string   `json:"text"`
	QR         string   `json:"qr"`
	SessionKey string   `json:"session_key"`
	Rendezvous string   `json:"rendezvous_id"`
	KeyCheck   string   `json:"key_check"`
	Messages   []string `json:"messages"` // existing->new "hello", new->existing "hi", existing->new ""
}

func TestLinkingVectors(t *testing.T) {
	c := fixedLinkingCode(t)
	old, nw := newLinkingPair(t, c)
	m0, _ := old.Seal([]byte("hello"))
	m1, _ := nw.Seal([]byte("hi"))
	m2, _ := old.Seal(nil)
	rv := c.Rendezvous()
	checkVectorFile(t, "linking_vectors.json", linkingVector{
		Secret:     hex.EncodeToString(c.secret[:]),
		Node:       c.Node,
		Text:       c.Text(),
		QR:         c.QR(),
		SessionKey: hex.EncodeToString(c.SessionKey()),
		Rendezvous: rv.String(),
		KeyCheck:   hex.EncodeToString(old.keyCheck[:]),
		Messages:   []string{hex.EncodeToString(m0), hex.EncodeToString(m1), hex.EncodeToString(m2)},
	})

	var v linkingVector
	readVectorFile(t, "linking_vectors.json", &v)
	p, err := ParseLinkingCode(v.QR)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(p.secret[:]) != v.Secret || p.Node != v.Node || p.Text() != v.Text || p.QR() != v.QR {
		t.Fatal("code differs")
	}
	if hex.EncodeToString(p.SessionKey()) != v.SessionKey || p.Rendezvous().String() != v.Rendezvous {
		t.Fatal("derivations differ")
	}
	o, n := newLinkingPair(t, p)
	for i, want := range []string{"hello", "hi", ""} {
		recv := n
		if i == 1 {
			recv = o
		}
		got, err := recv.Open(mustHex(t, v.Messages[i]))
		if err != nil || string(got) != want {
			t.Fatalf("message %d: %q %v", i, got, err)
		}
	}
}
