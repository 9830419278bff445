package e2ee

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func FuzzDecodeLink(f *testing.F) {
	fx := newChainFixture(f)
	for _, l := range fx.links {
		f.Add(l.Encode())
	}
	// A genesis naming a recovery key, and a link signed by it.
	rf := newForkFixture(f)
	f.Add(rf.base.links[0].Encode())
	f.Add(rf.legitRecovered.links[len(rf.legitRecovered.links)-1].Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ident.DecodeLink(data)
		if err != nil {
			if !errors.Is(err, ident.ErrMalformed) && !errors.Is(err, ident.ErrNonCanonical) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if !bytes.Equal(l.Encode(), data) {
			t.Fatalf("decoded link re-encodes differently:\n in %x\nout %x", data, l.Encode())
		}
	})
}

// frameLinks joins encoded links as u16 length || bytes, the fuzz input of
// FuzzVerifyChain.
func frameLinks(enc [][]byte) []byte {
	var out []byte
	for _, b := range enc {
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

func unframeLinks(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 && len(out) <= ident.MaxChainLinks {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// FuzzVerifyChain decodes and verifies framed links. The user ID is taken
// from the first link so that mutated chains reach the checks after the
// genesis hash.
func FuzzVerifyChain(f *testing.F) {
	fx := newChainFixture(f)
	enc := encodeLinks(fx.links)
	f.Add(frameLinks(enc))
	f.Add(frameLinks(enc[:2]))
	f.Add(frameLinks([][]byte{enc[0], enc[2], enc[1]}))
	f.Add(frameLinks(encodeLinks(newForkFixture(f).legitRecovered.links)))
	f.Fuzz(func(t *testing.T, data []byte) {
		links := unframeLinks(data)
		if len(links) == 0 {
			return
		}
		g, err := ident.DecodeLink(links[0])
		if err != nil {
			return
		}
		set, decoded, err := ident.DecodeChain(g.UserID(), links)
		if err != nil {
			var ce *ident.ChainError
			if !errors.As(err, &ce) || ce.Index < 0 || ce.Index >= len(links) {
				t.Fatalf("error is not a ChainError naming a link: %v", err)
			}
			return
		}
		if set.Version() != uint64(len(links)) || set.Len() == 0 || set.Len() > ident.MaxActiveDevices {
			t.Fatalf("version %d for %d links, %d devices", set.Version(), len(links), set.Len())
		}
		// Incremental verification agrees with whole-chain verification.
		inc, err := ident.VerifyChain(g.UserID(), decoded[:1])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range decoded[1:] {
			if inc, err = inc.Apply(l); err != nil {
				t.Fatal(err)
			}
		}
		if ident.Relate(set, inc) != ident.ChainSame {
			t.Fatal("Apply and VerifyChain disagree")
		}
	})
}

func FuzzDecodeAddDeviceRequest(f *testing.F) {
	fx := newChainFixture(f)
	req, err := NewAddDeviceRequest(fx.last().Head(), fixedDeviceKeys(f, "new"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ident.DecodeAddDeviceRequest(data)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Encode(), data) {
			t.Fatal("re-encodes differently")
		}
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseRecoveryKey(f *testing.F) {
	k := fixedRecoveryKey(f, "alice recovery")
	f.Add(k.Text())
	f.Add(strings.ToUpper(k.Text()))
	f.Add(strings.ReplaceAll(k.Text(), "-", " "))
	f.Add("")
	f.Add("abcd-efgh")
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseRecoveryKey(text)
		if err != nil {
			if !errors.Is(err, ident.ErrBadKey) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		again, err := ParseRecoveryKey(r.Text())
		if err != nil || !again.Public().Equal(r.Public()) {
			t.Fatalf("the text form does not read back: %v", err)
		}
	})
}
