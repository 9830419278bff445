package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// testKDF is the cheapest Argon2id the e2ee package accepts, so tests do
// not spend seconds per key file; the format is the same.
var testKDF = e2ee.BackupParams{Time: 1, MemoryKiB: 8, Threads: 1, ChunkSize: e2ee.MinBackupChunkSize}

func newTestHome(t *testing.T) *Home {
	t.Helper()
	h, err := OpenHome(filepath.Join(t.TempDir(), "home"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testDevice makes keys and a genesis chain for a home's state.
func testDevice(t testing.TB) (e2ee.DeviceKeys, State) {
	t.Helper()
	keys, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return keys, State{User: g.UserID().String(), Device: keys.ID().String(), Node: "http://127.0.0.1:1", Chain: [][]byte{g.Encode()}}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestHomeKeysRoundTripAndModes(t *testing.T) {
	h := newTestHome(t)
	if has, err := h.HasDevice(); err != nil || has {
		t.Fatalf("new home: HasDevice = %v, %v", has, err)
	}
	if _, err := h.State(); !errors.Is(err, ErrNoHome) {
		t.Fatalf("State of an empty home: %v, want ErrNoHome", err)
	}
	keys, st := testDevice(t)
	pass := []byte("correct horse battery staple")
	if err := h.Create(keys, pass, st); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, h.Dir()); m != HomeDirMode {
		t.Errorf("home mode %04o, want %04o", m, HomeDirMode)
	}
	for _, f := range []string{KeysFile, StateFile} {
		if m := mode(t, filepath.Join(h.Dir(), f)); m != HomeFileMode {
			t.Errorf("%s mode %04o, want %04o", f, m, HomeFileMode)
		}
	}
	got, err := h.Keys(pass)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Signing.Equal(keys.Signing) || !got.Messaging.Equal(keys.Messaging) {
		t.Fatal("keys read back differ from the keys stored")
	}
	st2, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	if st2.User != st.User || st2.Device != st.Device || len(st2.Chain) != 1 || !bytes.Equal(st2.Chain[0], st.Chain[0]) {
		t.Fatalf("state read back %+v, stored %+v", st2, st)
	}

	// At rest, neither seed nor the passphrase appears in any file.
	entries, err := os.ReadDir(h.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(h.Dir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for name, secret := range map[string][]byte{"signing seed": keys.Signing.Seed(), "messaging seed": keys.Messaging.Seed(), "passphrase": pass} {
			if bytes.Contains(data, secret) {
				t.Errorf("%s holds the %s in clear", e.Name(), name)
			}
		}
	}
}

func TestHomeWrongPassphrase(t *testing.T) {
	h := newTestHome(t)
	keys, st := testDevice(t)
	if err := h.Create(keys, []byte("right"), st); err != nil {
		t.Fatal(err)
	}
	_, err := h.Keys([]byte("wrong"))
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if !strings.Contains(err.Error(), "wrong passphrase") {
		t.Errorf("error %q does not say what is wrong", err)
	}
	if _, err := h.Keys([]byte("right")); err != nil {
		t.Fatalf("the right passphrase after a wrong one: %v", err)
	}
}

func TestHomeRefusesSecondDeviceAndEmptyPassphrase(t *testing.T) {
	h := newTestHome(t)
	keys, st := testDevice(t)
	if err := h.Create(keys, nil, st); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("empty passphrase: %v", err)
	}
	if has, _ := h.HasDevice(); has {
		t.Fatal("a refused Create left keys behind")
	}
	if err := h.Create(keys, []byte("p"), st); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(h.Dir(), KeysFile))
	keys2, st2 := testDevice(t)
	if err := h.Create(keys2, []byte("p"), st2); !errors.Is(err, ErrHomeInUse) {
		t.Fatalf("second Create: %v, want ErrHomeInUse", err)
	}
	after, _ := os.ReadFile(filepath.Join(h.Dir(), KeysFile))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused Create changed the key file")
	}
	if got, _ := h.State(); got.Device != st.Device {
		t.Fatal("a refused Create changed the state")
	}
}

// Opening a home, and reading it, never creates it: only Create does,
// with its missing parents.
func TestHomeCreatedOnlyByCreate(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "parent", "home")
	h, err := OpenHome(dir, testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.State(); !errors.Is(err, ErrNoHome) {
		t.Fatalf("State of a home that does not exist: %v, want ErrNoHome", err)
	}
	if _, err := h.Keys([]byte("a passphrase")); !errors.Is(err, ErrNoHome) {
		t.Fatalf("Keys of a home that does not exist: %v, want ErrNoHome", err)
	}
	if _, err := New(Options{Home: dir, Node: "http://127.0.0.1:1", KDF: testKDF}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "parent")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("opening a home created it: %v", err)
	}
	keys, st := testDevice(t)
	if err := h.Create(keys, []byte("a passphrase"), st); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if m := mode(t, d); m != HomeDirMode {
			t.Errorf("%s mode %04o, want %04o", d, m, HomeDirMode)
		}
	}
}

// An undone create leaves nothing it made: no file, no directory it
// created; a directory that existed stays, empty.
func TestHomeCreateUndo(t *testing.T) {
	keys, st := testDevice(t)
	root := t.TempDir()

	// Undone after success (the node refused the device): the same
	// cleanup as a Create that fails on the way.
	for _, existed := range []bool{false, true} {
		dir := filepath.Join(root, fmt.Sprintf("new-%v", existed), "home")
		if existed {
			if err := os.MkdirAll(dir, HomeDirMode); err != nil {
				t.Fatal(err)
			}
		}
		h, err := OpenHome(dir, testKDF)
		if err != nil {
			t.Fatal(err)
		}
		undo, err := h.create(keys, []byte("a passphrase"), st)
		if err != nil {
			t.Fatal(err)
		}
		if has, _ := h.HasDevice(); !has {
			t.Fatal("create made no device")
		}
		undo()
		if !existed {
			if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("undo left the directories it made: %v", err)
			}
			continue
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
			t.Fatalf("undo in an existing home: %v, left %v", err, entries)
		}
	}
}

// New passphrases need MinPassphraseLength characters, counted as
// characters, not bytes.
func TestCheckNewPassphrase(t *testing.T) {
	for p, want := range map[string]error{
		"":                 ErrEmptyPassphrase,
		"p":                ErrPassphraseTooShort,
		"seven c":          ErrPassphraseTooShort,
		"ééééééé":          ErrPassphraseTooShort, // 14 bytes, 7 characters
		"eight ch":         nil,
		"correct horse ba": nil,
	} {
		if err := CheckNewPassphrase([]byte(p)); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("CheckNewPassphrase(%q) = %v, want %v", p, err, want)
		}
	}
}

func TestHomeRefusesOpenPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenHome(dir, testKDF); !errors.Is(err, ErrHomePermissions) {
		t.Fatalf("home of mode 0755: %v, want ErrHomePermissions", err)
	}

	h := newTestHome(t)
	keys, st := testDevice(t)
	if err := h.Create(keys, []byte("p"), st); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(h.Dir(), KeysFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Keys([]byte("p")); !errors.Is(err, ErrHomePermissions) {
		t.Fatalf("key file of mode 0644: %v, want ErrHomePermissions", err)
	}
}

func TestHomeKeysMustMatchState(t *testing.T) {
	h := newTestHome(t)
	keys, st := testDevice(t)
	if err := h.Create(keys, []byte("p"), st); err != nil {
		t.Fatal(err)
	}
	_, other := testDevice(t)
	st.Device = other.Device
	if err := h.SaveState(st); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Keys([]byte("p")); !errors.Is(err, ErrCorruptHome) {
		t.Fatalf("keys of another device than the state names: %v, want ErrCorruptHome", err)
	}
}

func TestHomeTamperedKeyFile(t *testing.T) {
	h := newTestHome(t)
	keys, st := testDevice(t)
	if err := h.Create(keys, []byte("p"), st); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.Dir(), KeysFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(path, data, HomeFileMode); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Keys([]byte("p")); !errors.Is(err, ErrCorruptHome) || !errors.Is(err, e2ee.ErrTampered) {
		t.Fatalf("tampered key file: %v, want ErrCorruptHome wrapping e2ee.ErrTampered", err)
	}
}

// A typed code with one wrong character is refused before anything is
// sent, with the checksum error, and the home stays empty.
func TestLinkJoinMistypedCode(t *testing.T) {
	// A fixed secret keeps the test deterministic (a random typo slips
	// past the 15-bit checksum once in 32768 codes).
	code, err := e2ee.NewLinkingCode(bytes.NewReader(bytes.Repeat([]byte{7}, e2ee.LinkingSecretSize)))
	if err != nil {
		t.Fatal(err)
	}
	text := []byte(code.Text())
	if text[0] == 'a' {
		text[0] = 'b'
	} else {
		text[0] = 'a'
	}
	// Port 1 on loopback: any request would fail with "connection refused".
	c, err := New(Options{Home: filepath.Join(t.TempDir(), "home"), Node: "http://127.0.0.1:1", KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LinkJoin(context.Background(), string(text), []byte("p"))
	if !errors.Is(err, e2ee.ErrLinkingCodeChecksum) {
		t.Fatalf("mistyped code: %v, want e2ee.ErrLinkingCodeChecksum", err)
	}
	if has, _ := c.Home().HasDevice(); has {
		t.Fatal("a refused join left a device in the home")
	}
	if _, err := LinkingCodeNode("volo-link:v1:tooshort"); !errors.Is(err, e2ee.ErrBadLinkingCode) {
		t.Fatalf("malformed code: %v, want e2ee.ErrBadLinkingCode", err)
	}
}

func TestParseNodeURL(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:8080", "https://node.example/", "http://[::1]:80/volo"} {
		if _, err := ParseNodeURL(s); err != nil {
			t.Errorf("ParseNodeURL(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://x/?a=b", "http://u:p@x", "/ip4/127.0.0.1/tcp/1"} {
		if _, err := ParseNodeURL(s); err == nil {
			t.Errorf("ParseNodeURL(%q) accepted", s)
		}
	}
}

// addDevice signs, with keys, a link adding d to the chain of set.
func addDevice(t *testing.T, set ident.DeviceSet, keys, d e2ee.DeviceKeys) (ident.DeviceSet, []byte) {
	t.Helper()
	req, err := e2ee.NewAddDeviceRequest(set.Head(), d)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e2ee.NewAddDevice(set, keys, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	next, err := set.Apply(l)
	if err != nil {
		t.Fatal(err)
	}
	return next, l.Encode()
}

// The client keeps the chain it verified last and refuses a node that
// serves an older one or one that contradicts it; a longer one is saved.
func TestOwnChainRollbackAndFork(t *testing.T) {
	keys, _ := testDevice(t)
	d2, _ := testDevice(t)
	d3, _ := testDevice(t)
	g, err := e2ee.NewGenesis(keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	user := g.UserID()
	set1, err := ident.VerifyChain(user, []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	v1 := [][]byte{g.Encode()}
	set2, l2 := addDevice(t, set1, keys, d2)
	v2 := append(append([][]byte{}, v1...), l2)
	_, l2fork := addDevice(t, set1, keys, d3)
	fork := append(append([][]byte{}, v1...), l2fork)
	_, l3 := addDevice(t, set2, keys, d3)
	v3 := append(append([][]byte{}, v2...), l3)

	h := newTestHome(t)
	if err := h.Create(keys, []byte("p"), State{User: user.String(), Device: keys.ID().String(), Chain: v2}); err != nil {
		t.Fatal(err)
	}
	c := &Client{home: h}
	accept := func(chain [][]byte) error {
		set, links, err := ident.DecodeChain(user, chain)
		if err != nil {
			t.Fatal(err)
		}
		st, err := h.State()
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.acceptOwnChain(st, set, links)
		return err
	}
	if err := accept(v1); !errors.Is(err, ErrChainRollback) {
		t.Fatalf("older chain: %v, want ErrChainRollback", err)
	}
	if err := accept(fork); !errors.Is(err, ErrChainForked) {
		t.Fatalf("forked chain: %v, want ErrChainForked", err)
	}
	if st, _ := h.State(); len(st.Chain) != 2 || !bytes.Equal(st.Chain[1], v2[1]) {
		t.Fatal("a refused chain replaced the saved one")
	}
	if err := accept(v2); err != nil {
		t.Fatalf("same chain: %v", err)
	}
	if err := accept(v3); err != nil {
		t.Fatalf("longer chain: %v", err)
	}
	if st, _ := h.State(); len(st.Chain) != 3 {
		t.Fatalf("saved chain has %d links after an extension, want 3", len(st.Chain))
	}
	if err := accept(v2); !errors.Is(err, ErrChainRollback) {
		t.Fatalf("back to v2 after v3: %v, want ErrChainRollback", err)
	}
}
