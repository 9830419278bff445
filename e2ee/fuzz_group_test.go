package e2ee

import (
	"bytes"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func FuzzDecodeGroupState(f *testing.F) {
	fx := newGroupFixture(f)
	f.Add(fx.g.Encode())
	g2, err := fx.g.Next(fx.alice.keys[0], fx.alice.id(), []ident.UserID{fx.alice.id(), fx.bob.id()}, fx.g.Admins, testTime(20))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(g2.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := DecodeGroupState(data)
		if err != nil {
			if !isOneOf(err, ident.ErrMalformed, ident.ErrNonCanonical) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !bytes.Equal(g.Encode(), data) {
			t.Fatal("decoded group state does not re-encode to its input")
		}
		if err := g.checkShape(); err != nil {
			t.Fatalf("decoded state breaks its rules: %v", err)
		}
		if VerifyNewGroup(g, fx.alice.set) == nil && !bytes.Equal(data, fx.g.Encode()) {
			t.Fatal("a state alice did not sign verifies")
		}
	})
}
