package p2p

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestRetryBacksOffUntilSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		err := Retry(t.Context(), time.Second, 8*time.Second, func(context.Context) error {
			at = append(at, time.Since(start))
			if len(at) < 6 {
				return errors.New("unreachable")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Pauses 1, 2, 4, 8, 8 seconds: attempts at 0, 1, 3, 7, 15, 23.
		want := []time.Duration{0, 1, 3, 7, 15, 23}
		if len(at) != len(want) {
			t.Fatalf("%d attempts, want %d", len(at), len(want))
		}
		for i := range want {
			if at[i] != want[i]*time.Second {
				t.Errorf("attempt %d at %v, want %v", i, at[i], want[i]*time.Second)
			}
		}
	})
}

func TestRetryStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		calls := 0
		err := Retry(ctx, time.Second, time.Minute, func(context.Context) error {
			calls++
			return errors.New("down")
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if calls != 4 { // at 0, 1, 3 and 7 seconds; the next would be at 15
			t.Errorf("%d calls, want 4", calls)
		}
	})
}

type prefixValidator string

func (p prefixValidator) Validate(_ string, v []byte) error {
	if !strings.HasPrefix(string(v), string(p)) {
		return errors.New("bad prefix")
	}
	return nil
}
func (prefixValidator) Select(string, [][]byte) (int, error) { return 0, nil }

func TestValidatorsDispatchByNamespace(t *testing.T) {
	vs := NewValidators()
	if err := vs.Add("a", prefixValidator("A")); err != nil {
		t.Fatal(err)
	}
	if err := vs.Add("b", prefixValidator("B")); err != nil {
		t.Fatal(err)
	}
	if err := vs.Add("a", prefixValidator("X")); err == nil {
		t.Error("registering a namespace twice succeeded")
	}
	cases := []struct {
		key, value string
		ok         bool
	}{
		{"/a/1", "A1", true},
		{"/a/1", "B1", false},
		{"/b/x/y", "B", true},
		{"/c/1", "A", false}, // no validator
		{"nokey", "A", false},
		{"/a", "A", false}, // not /ns/key
	}
	for _, c := range cases {
		err := vs.Validate(c.key, []byte(c.value))
		if (err == nil) != c.ok {
			t.Errorf("Validate(%q, %q) = %v, want ok=%v", c.key, c.value, err, c.ok)
		}
	}
	if got := vs.Namespaces(); strings.Join(got, ",") != "a,b" {
		t.Errorf("Namespaces = %v", got)
	}
}

func TestIdentityIsCreatedOnceAndReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", IdentityFile)
	k1, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateIdentity(path)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	id1, _ := PeerIDOf(k1)
	id2, _ := PeerIDOf(k2)
	if id1 != id2 {
		t.Errorf("peer ID changed: %s then %s", id1, id2)
	}
}

func TestIdentityRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.key")
	if _, _, err := LoadOrCreateIdentity(open); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644)
	if _, err := LoadIdentity(open); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("world-readable key: err = %v", err)
	}
	junk := filepath.Join(dir, "junk.key")
	os.WriteFile(junk, []byte("not a key"), 0o600)
	if _, _, err := LoadOrCreateIdentity(junk); err == nil || !strings.Contains(err.Error(), "not a libp2p private key") {
		t.Errorf("junk key: err = %v", err)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = nil }, "p2p.listen"},
		{func(c *Config) { c.Listen = []string{"/ip4/127.0.0.1/tcp/1", "/ip4/nope/tcp/1"} }, "p2p.listen[1]"},
		{func(c *Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4001"} }, "p2p.bootstrap[0]"},
		{func(c *Config) { c.Bootstrap = []string{"garbage"} }, "p2p.bootstrap[0]"},
		{func(c *Config) { c.ConnManager.HighWater = 1 }, "p2p.conn_manager"},
		{func(c *Config) { c.Resources.MaxMemoryMB = 1 }, "p2p.resources.max_memory_mb"},
		{func(c *Config) { c.Resources.MaxFileDescriptors = 0 }, "p2p.resources.max_file_descriptors"},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %s, got %v", c.want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}
