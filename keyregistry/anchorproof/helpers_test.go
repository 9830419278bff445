package anchorproof

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// userChain is a verified user chain: its device set and encoded links.
type userChain struct {
	Set   ident.DeviceSet
	Links [][]byte
}

func testKeys(t testing.TB) e2ee.DeviceKeys {
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testChain builds a verified chain: genesis by keys[0], then each further
// key added by the one before it.
func testChain(t testing.TB, keys ...e2ee.DeviceKeys) userChain {
	t.Helper()
	g, err := e2ee.NewGenesis(keys[0], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	links := [][]byte{g.Encode()}
	set, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(keys); i++ {
		req, err := e2ee.NewAddDeviceRequest(set.Head(), keys[i])
		if err != nil {
			t.Fatal(err)
		}
		l, err := e2ee.NewAddDevice(set, keys[i-1], req, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if set, err = set.Apply(l); err != nil {
			t.Fatal(err)
		}
		links = append(links, l.Encode())
	}
	return userChain{Set: set, Links: links}
}
