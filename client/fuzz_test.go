package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/volo-chat/volo/e2ee"
)

// FuzzParseError: any answer body gives an APIError with a code and a
// bounded message, and the node's JSON error form is read exactly.
func FuzzParseError(f *testing.F) {
	f.Add(409, []byte(`{"error":{"code":"stale_chain","message":"refetch"}}`))
	f.Add(502, []byte("<html>bad gateway</html>"))
	f.Add(500, []byte(""))
	f.Add(400, []byte(`{"error":{"code":""}}`))
	f.Add(413, []byte("\xff\xfe"+strings.Repeat("x", 300)))
	f.Fuzz(func(t *testing.T, status int, data []byte) {
		e := parseError(status, data)
		if e.Status != status || e.Code == "" {
			t.Fatalf("%+v", e)
		}
		if strings.HasPrefix(e.Code, "http_") && (len(e.Message) > maxErrorMessage || !utf8.ValidString(e.Message)) {
			t.Fatalf("message of a foreign body not bounded or not UTF-8: %q", e.Message)
		}
		if e.Error() == "" {
			t.Fatal("empty error text")
		}
	})
}

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// FuzzHomeState: whatever state.json holds, reading it never panics; what
// it accepts saves and reads back the same, and a chain in it is used
// only if it verifies.
func FuzzHomeState(f *testing.F) {
	keys, err := e2ee.GenerateDeviceKeys(strings.NewReader(strings.Repeat("k", 64)))
	if err != nil {
		f.Fatal(err)
	}
	g, err := e2ee.NewGenesis(keys, testTime)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	for _, d := range []string{"seed", "fuzz"} {
		if err := os.Mkdir(filepath.Join(dir, d), HomeDirMode); err != nil {
			f.Fatal(err)
		}
	}
	h, err := OpenHome(filepath.Join(dir, "seed"), testKDF)
	if err != nil {
		f.Fatal(err)
	}
	if err := h.SaveState(State{User: g.UserID().String(), Device: keys.ID().String(), Node: "http://127.0.0.1:8080", Chain: [][]byte{g.Encode()}}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(h.Dir(), StateFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"user_id":"x"}`))
	f.Add([]byte(`{"version":1,"chain":["AAAA"]}`))
	f.Add([]byte(`[]`))
	// One home per fuzzing process (f.TempDir is per process); each input
	// overwrites its files.
	home, err := OpenHome(filepath.Join(dir, "fuzz"), testKDF)
	if err != nil {
		f.Fatal(err)
	}
	// HasDevice needs a key file; its content does not matter here.
	if err := writeFileAtomic(filepath.Join(home.Dir(), KeysFile), []byte("x")); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(home.Dir(), StateFile), data, HomeFileMode); err != nil {
			t.Fatal(err)
		}
		st, err := home.State()
		if err != nil {
			return
		}
		if set, _, err := savedChain(st); err == nil && set.User().String() != st.User {
			t.Fatalf("saved chain of %s accepted for %s", set.User(), st.User)
		}
		if err := home.SaveState(st); err != nil {
			t.Fatal(err)
		}
		st2, err := home.State()
		if err != nil {
			t.Fatalf("state saved by SaveState does not read back: %v", err)
		}
		if st2.User != st.User || st2.Device != st.Device || st2.Node != st.Node || len(st2.Chain) != len(st.Chain) {
			t.Fatalf("round trip changed the state: %+v -> %+v", st, st2)
		}
	})
}
