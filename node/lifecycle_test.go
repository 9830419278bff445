package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
)

// devnetConfig is a test node with every step: its chain is an embedded
// devnet, so the chain and anchoring steps run too.
func devnetConfig(t *testing.T) node.Config {
	cfg := testnet.Config(t.TempDir())
	cfg.Chain = node.DefaultChainConfig()
	return cfg
}

// usage is what the process holds that a node could leak.
type usage struct{ goroutines, files int }

func currentUsage(t *testing.T) usage {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return usage{runtime.NumGoroutine(), len(fds)}
}

// released waits until the process holds no more goroutines and open files
// than base, and fails with what it still holds if that does not happen.
func released(t *testing.T, base usage) {
	t.Helper()
	var last usage
	err := tstest.Poll(releaseTimeout, func() error {
		last = currentUsage(t)
		if last.goroutines > base.goroutines || last.files > base.files {
			return fmt.Errorf("%d goroutines and %d open files, %d and %d before", last.goroutines, last.files, base.goroutines, base.files)
		}
		return nil
	})
	if err != nil {
		var files []string
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
			files = append(files, target)
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%v\nopen files: %s\ngoroutines:\n%s", err, strings.Join(files, " "), buf)
	}
}

// releaseTimeout bounds the wait for a stopped node's goroutines to end: a
// hang guard, not a measure of speed.
const releaseTimeout = time.Minute

// warmUp runs a node once so that what libraries start once per process
// is in the baseline that each test measures after it, not counted as a
// leak.
func warmUp(t *testing.T) {
	t.Helper()
	before := currentUsage(t)
	n, err := node.New(devnetConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	// The warm-up's goroutines end in the background: wait until the
	// process is back where it was, or, when a library keeps something for
	// the life of the process, as near as it gets.
	tstest.Poll(10*time.Second, func() error {
		if now := currentUsage(t); now.goroutines > before.goroutines || now.files > before.files {
			return errors.New("warm-up still ending")
		}
		return nil
	})
}

func TestFailedStepReleasesEverything(t *testing.T) {
	warmUp(t)
	for _, step := range node.Steps() {
		t.Run("build "+step, func(t *testing.T) {
			cfg := devnetConfig(t)
			base := currentUsage(t)
			n, err := node.NewFailing(cfg, nil, "build", step)
			if !errors.Is(err, node.ErrInjected) || !strings.Contains(err.Error(), "build "+step) || n != nil {
				t.Fatalf("New = %v, %v; want the injected failure of step %s", n, err, step)
			}
			released(t, base)
		})
	}
	for _, step := range node.Steps() {
		if step == "metrics" { // nothing to start
			continue
		}
		t.Run("start "+step, func(t *testing.T) {
			cfg := devnetConfig(t)
			base := currentUsage(t)
			n, err := node.NewFailing(cfg, nil, "start", step)
			if err != nil {
				t.Fatal(err)
			}
			err = n.Start(t.Context())
			if !errors.Is(err, node.ErrInjected) || !strings.Contains(err.Error(), "start "+step) {
				t.Fatalf("Start = %v; want the injected failure of step %s", err, step)
			}
			if !n.Store().IsClosed() {
				t.Error("store still open after a failed start")
			}
			released(t, base)
		})
	}
	t.Run("built, never started", func(t *testing.T) {
		cfg := devnetConfig(t)
		base := currentUsage(t)
		n, err := node.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		released(t, base)
	})
}

// TestFailedBuildReleasesEverything makes steps fail for real, through
// what is in the data directory and the configuration.
func TestFailedBuildReleasesEverything(t *testing.T) {
	warmUp(t)
	cases := []struct {
		name  string
		setUp func(t *testing.T, cfg *node.Config)
		want  string
	}{
		{"store cannot be opened", func(t *testing.T, cfg *node.Config) {
			mustWrite(t, filepath.Join(cfg.DataDir, node.StoreDir), "not a directory")
		}, "store"},
		{"devnet chain file corrupt", func(t *testing.T, cfg *node.Config) {
			mustWrite(t, filepath.Join(cfg.DataDir, node.DevnetDir, "chain.cbor"), "\xff\xff not CBOR")
		}, "devnet"},
		{"anchor state corrupt", func(t *testing.T, cfg *node.Config) {
			// After the devnet has opened its chain file.
			mustWrite(t, filepath.Join(cfg.DataDir, node.AnchorStateFile), "{not json")
		}, "anchor state"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := devnetConfig(t)
			c.setUp(t, &cfg)
			base := currentUsage(t)
			n, err := node.New(cfg, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, %v; want an error about the %s", n, err, c.want)
			}
			released(t, base)
		})
	}
	t.Run("api port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cfg := devnetConfig(t)
		cfg.API.Listen = ln.Addr().String()
		base := currentUsage(t)
		n, err := node.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "start api") {
			t.Fatalf("Start = %v; want the API's listen error", err)
		}
		released(t, base)
	})
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStopReversesStart reads the order of the node's debug logs: every
// service starts in build order and stops in the reverse order.
func TestStopReversesStart(t *testing.T) {
	var logs syncBuffer
	n, err := node.New(devnetConfig(t), slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	var started, stopped []string
	for line := range strings.Lines(logs.String()) {
		var rec struct {
			Msg     string `json:"msg"`
			Service string `json:"service"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		switch rec.Msg {
		case "service started":
			started = append(started, rec.Service)
		case "service stopped":
			stopped = append(stopped, rec.Service)
		}
	}
	want := slices.DeleteFunc(node.Steps(), func(s string) bool { return s == "metrics" })
	if !slices.Equal(started, want) {
		t.Errorf("started %v, want %v", started, want)
	}
	slices.Reverse(want)
	if !slices.Equal(stopped, want) {
		t.Errorf("stopped %v, want %v", stopped, want)
	}
}

// syncBuffer is a bytes.Buffer safe for the node's concurrent loggers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
