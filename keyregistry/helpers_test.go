package keyregistry

import (
	"crypto/rand"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/chain/devnet"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/store"
)

// newTestHost is a started libp2p host on loopback, stopped at the end.
func newTestHost(t testing.TB) *p2p.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pc := p2p.DefaultConfig()
	pc.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	pc.Resources.MaxMemoryMB = 256
	host, err := p2p.New(pc, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Stop() })
	return host
}

// newTestStore is a badger store in a temporary directory, closed at the
// end, with the registry's view of it and an anchor queue in that view.
func newTestStore(t testing.TB) (*store.DB, *store.Prefixed, *StoreQueue) {
	t.Helper()
	db, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	view := db.Prefix("registry/")
	q, err := NewStoreQueue(view)
	if err != nil {
		t.Fatal(err)
	}
	return db, view, q
}

// newTestService builds a registry on a real libp2p host (loopback) and a
// real badger store in a temporary directory, started, stopped at the end.
func newTestService(t testing.TB, cfg Config, opts ...Option) (*Service, *store.DB) {
	t.Helper()
	host := newTestHost(t)
	db, view, q := newTestStore(t)
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler)), WithMetrics(prometheus.NewRegistry())}, opts...)
	s, err := New(cfg, NetworkOf(host), view, q, func() string { return "http://127.0.0.1:1" }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s, db
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
func testChain(t testing.TB, keys ...e2ee.DeviceKeys) Chain {
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
	return Chain{Set: set, Links: links, Attestation: testAttestation(t, testNodeKey(t), set.User(), KindOIDC)}
}

// testNodeKey is a fresh node peer key.
func testNodeKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// testAccount is the OIDC account test attestations hash.
var testAccount = Account{Issuer: "https://issuer.example", Subject: "248289761001"}

// testAttestation is key's attestation of user, of kind: OIDC of
// testAccount, or development.
func testAttestation(t testing.TB, key crypto.PrivKey, user ident.UserID, kind AttestationKind) Attestation {
	t.Helper()
	var account []byte
	if kind == KindOIDC {
		account = AccountHash(user, testAccount)
	}
	a, err := Attest(key, user, kind, account, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func netListen() (net.Listener, error)           { return net.Listen("tcp", "127.0.0.1:0") }
func listenOn(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// startDevnet runs a devnet making blocks only on MakeBlock.
func startDevnet(t testing.TB) *devnet.Devnet {
	t.Helper()
	dn, err := devnet.New(devnet.Config{Dir: t.TempDir(), NodeToNode: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := dn.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Stop() })
	return dn
}
