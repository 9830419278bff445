package e2ee

import (
	"bytes"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func FuzzParseLinkingCode(f *testing.F) {
	c := fixedLinkingCode(f)
	f.Add(c.Text())
	f.Add(c.QR())
	f.Add("volo-link:v1:" + c.Text() + "?node=%2Fip4%2F127.0.0.1")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseLinkingCode(s)
		if err != nil {
			return
		}
		q, err := ParseLinkingCode(c.QR())
		if err != nil || !q.Equal(c) {
			t.Fatalf("QR form of %q does not parse back: %v", s, err)
		}
		p, err := ParseLinkingCode(c.Text())
		if err != nil || !bytes.Equal(p.SessionKey(), c.SessionKey()) {
			t.Fatalf("text form of %q does not parse back: %v", s, err)
		}
	})
}

func FuzzOpenLinkingMessage(f *testing.F) {
	c := fixedLinkingCode(f)
	old, nw := newLinkingPair(f, c)
	m0, _ := old.Seal([]byte("chain head"))
	m1, _ := nw.Seal([]byte("request"))
	f.Add(m0)
	f.Add(m1)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, role := range []LinkingRole{LinkingExistingDevice, LinkingNewDevice} {
			s, err := NewLinkingSession(c, role)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := s.Open(data)
			if err != nil {
				if s.recv != 0 {
					t.Fatal("failed Open changed the session")
				}
				continue
			}
			if s.recv != 1 || len(pt) != len(data)-linkingHeaderLen-16 {
				t.Fatal("opened message has an impossible shape")
			}
			if _, err := s.Open(data); err == nil {
				t.Fatal("replay accepted")
			}
		}
	})
}

func FuzzDecodeChainHead(f *testing.F) {
	f.Add(newChainFixture(f).last().Head().Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ident.DecodeChainHead(data)
		if err != nil {
			return
		}
		if !bytes.Equal(h.Encode(), data) {
			t.Fatal("re-encodes differently")
		}
	})
}

func FuzzCompareSafetyNumbers(f *testing.F) {
	n, err := NewSafetyNumber(singleDeviceSet(f, "a"), singleDeviceSet(f, "b"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(n.Digits(), n.QR())
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, errA := CompareSafetyNumbers(a, b)
		ba, errB := CompareSafetyNumbers(b, a)
		if (errA == nil) != (errB == nil) || ab != ba {
			t.Fatalf("not symmetric: %v %v / %v %v", ab, errA, ba, errB)
		}
		if errA == nil {
			if ok, err := CompareSafetyNumbers(a, a); err != nil || !ok {
				t.Fatal("not reflexive")
			}
		}
	})
}

func FuzzParseRendezvousID(f *testing.F) {
	rv := fixedLinkingCode(f).Rendezvous()
	f.Add(rv.String())
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ident.ParseRendezvousID(s)
		if err != nil {
			return
		}
		if r.String() != s {
			t.Fatalf("parsed %q prints as %q", s, r)
		}
	})
}
