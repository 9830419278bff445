package keyregistry

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// forkScenario is a user whose phone (genesis, naming a recovery key)
// added a laptop that was stolen. base is genesis and the add-device;
// legit continues it with the phone revoking the laptop; thief with the
// laptop revoking the phone; padded is thief with padLinks more devices;
// recovered is legit with the recovery key adding a new device.
type forkScenario struct {
	recovery                       e2ee.RecoveryKey
	phone, laptop                  e2ee.DeviceKeys
	base, legit, thief, padded     Chain
	recovered                      Chain
	legitDivergent, thiefDivergent ident.LinkID
}

const padLinks = 20

func extend(t testing.TB, c Chain, l ident.Link, err error) Chain {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.Set.Apply(l)
	if err != nil {
		t.Fatal(err)
	}
	return Chain{Set: set, Links: append(c.Links[:len(c.Links):len(c.Links)], l.Encode())}
}

func addDevice(t testing.TB, c Chain, signer, dev e2ee.DeviceKeys, now time.Time) Chain {
	t.Helper()
	req, err := e2ee.NewAddDeviceRequest(c.Set.Head(), dev)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e2ee.NewAddDevice(c.Set, signer, req, now)
	return extend(t, c, l, err)
}

func newForkScenario(t testing.TB) forkScenario {
	t.Helper()
	rk, err := e2ee.GenerateRecoveryKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := forkScenario{recovery: rk, phone: testKeys(t), laptop: testKeys(t)}
	now := time.Now()
	g, err := e2ee.NewGenesisWithRecovery(f.phone, rk.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	f.base = addDevice(t, Chain{Set: set, Links: [][]byte{g.Encode()}}, f.phone, f.laptop, now)
	l, err := e2ee.NewRevokeDevice(f.base.Set, f.phone, f.laptop.ID(), now.Add(time.Minute))
	f.legit = extend(t, f.base, l, err)
	l, err = e2ee.NewRevokeDevice(f.base.Set, f.laptop, f.phone.ID(), now.Add(time.Second))
	f.thief = extend(t, f.base, l, err)
	f.padded = f.thief
	for i := range padLinks {
		f.padded = addDevice(t, f.padded, f.laptop, testKeys(t), now.Add(time.Duration(2+i)*time.Second))
	}
	req, err := e2ee.NewAddDeviceRequest(f.legit.Set.Head(), testKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err = e2ee.NewRecoveryAddDevice(f.legit.Set, rk, req, now.Add(2*time.Minute))
	f.recovered = extend(t, f.legit, l, err)
	f.legitDivergent = f.legit.Set.Head().Link
	f.thiefDivergent = f.thief.Set.LinkIDs()[2]
	return f
}

// thiefWinsByLinkID reports whether the thief's divergent link has the
// smaller link ID: who wins a fork that no recovery link or anchor decides.
func (f forkScenario) thiefWinsByLinkID() bool {
	return bytes.Compare(f.thiefDivergent.Bytes(), f.legitDivergent.Bytes()) < 0
}

// TestSelectPaddedForkDoesNotWin is the attack on the DHT's Select: a
// thief's branch padded with padLinks devices used to win by length.
func TestSelectPaddedForkDoesNotWin(t *testing.T) {
	f := newForkScenario(t)
	key := RecordKey(f.base.Set.User())
	legitFirst := Validator{anchored: func(ident.UserID) ident.AnchoredAt {
		return func(l ident.LinkID) (uint64, bool) {
			switch {
			case l.Equal(f.legitDivergent):
				return 100, true
			case l.Equal(f.thiefDivergent):
				return 101, true
			}
			return 0, false
		}
	}}
	noAnchors := Validator{}
	for _, c := range []struct {
		name      string
		v         Validator
		legit     Chain
		legitWins bool
	}{
		{"recovery link", noAnchors, f.recovered, true},
		{"anchored first", legitFirst, f.legit, true},
		{"link ID", noAnchors, f.legit, !f.thiefWinsByLinkID()},
	} {
		for _, thief := range []Chain{f.thief, f.padded} {
			for _, legitAt := range []int{0, 1} {
				values := [][]byte{thief.Record().Encode()}
				values = append(values[:legitAt], append([][]byte{c.legit.Record().Encode()}, values[legitAt:]...)...)
				got, err := c.v.Select(key, values)
				if err != nil {
					t.Fatal(err)
				}
				if (got == legitAt) != c.legitWins {
					t.Errorf("%s: thief with %d links, legit at %d: Select = %d", c.name, thief.Version(), legitAt, got)
				}
			}
		}
	}
	// The positive control: an extension of the legit chain still wins
	// over it, and the longer of two prefixes.
	if got, _ := noAnchors.Select(key, [][]byte{f.legit.Record().Encode(), f.recovered.Record().Encode()}); got != 1 {
		t.Errorf("extension lost: %d", got)
	}
	if got, _ := noAnchors.Select(key, [][]byte{f.thief.Record().Encode(), f.base.Record().Encode()}); got != 0 {
		t.Errorf("rollback won: %d", got)
	}
}
