package main

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleRSS starts volo-node in a subprocess with the embedded
// defaults (ports 0), waits until it is healthy and has idled for a few
// seconds, and reports its resident set size.
func BenchmarkIdleRSS(b *testing.B) {
	var total float64
	runs := 0
	for b.Loop() {
		p := startNodeB(b)
		time.Sleep(5 * time.Second) // let start-up garbage be collected
		rss, err := vmRSS(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		total += rss
		runs++
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}
	b.ReportMetric(total/float64(runs), "idle-RSS-MiB")
}

func startNodeB(b *testing.B) *proc {
	b.Helper()
	p := startNode(b, "--data-dir", b.TempDir(), "--api-listen", "127.0.0.1:0",
		"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--p2p-listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--log-level", "warn")
	url := p.apiURL(b)
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	return p
}

// vmRSS reads a process's resident set size in MiB from /proc.
func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, os.ErrNotExist
}
