package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/volo-chat/volo/configs"
)

// Every embedded configuration, as `volo-node config NAME` prints it,
// either runs a node or stops it before it writes anything, with an error
// naming each missing file and how to make it. node.toml with chain
// backend none or devnet runs.
func TestConfigTemplates(t *testing.T) {
	unedited := func(s string) string { return s }
	backend := func(b string) func(string) string {
		return func(s string) string {
			s = strings.Replace(s, `backend = "cardano"`, `backend = "`+b+`"`, 1)
			// The embedded devnet's node-to-node port, fixed in the
			// template, on a free port.
			return strings.Replace(s, `node_to_node_listen = "127.0.0.1:3001"`, `node_to_node_listen = "127.0.0.1:0"`, 1)
		}
	}
	type templateCase struct {
		name, template string
		edit           func(string) string
		missing        []string // files the template names that are missing; nil: it runs
		want           []string // what the error says
	}
	cases := []templateCase{
		{"dev.toml", "dev.toml", unedited, nil, nil},
		{"node.toml", "node.toml", unedited, []string{"/etc/volo/payment.skey", "/opt/cardano/preview/node.socket"}, []string{
			"nothing written",
			"chain.payment_key: /etc/volo/payment.skey does not exist",
			"cardano-cli address key-gen --signing-key-file /etc/volo/payment.skey --verification-key-file /etc/volo/payment.vkey",
			"--testnet-magic 2",
			"chain.socket: /opt/cardano/preview/node.socket does not exist",
			`chain.backend = "none"`,
		}},
		{"node.toml backend none", "node.toml", backend("none"), nil, nil},
		{"node.toml backend devnet", "node.toml", backend("devnet"), nil, nil},
	}
	for _, name := range configs.Names() {
		if !slices.ContainsFunc(cases, func(c templateCase) bool { return c.template == name }) {
			t.Errorf("no case for the embedded configuration %s", name)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range c.missing {
				if _, err := os.Stat(f); err == nil {
					t.Skipf("%s exists on this machine", f)
				}
			}
			doc, err := configs.Get(c.template)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			conf := filepath.Join(dir, c.template)
			if err := os.WriteFile(conf, []byte(c.edit(string(doc))), 0o600); err != nil {
				t.Fatal(err)
			}
			// The data directory and the ports are the test's: it never
			// writes to the template's data_dir nor binds fixed ports.
			dataDir := filepath.Join(dir, "data")
			p := startNodeIn(t, dir, "run", "--config", conf, "--data-dir", dataDir,
				"--api-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
			if c.missing == nil {
				p.apiURL(t)
				p.cmd.Process.Signal(syscall.SIGTERM)
				if stderr := p.wait(t); p.cmd.ProcessState.ExitCode() != 0 {
					t.Fatalf("exit %d\n%s", p.cmd.ProcessState.ExitCode(), stderr)
				}
				return
			}
			stderr := p.wait(t)
			if code := p.cmd.ProcessState.ExitCode(); code == 0 {
				t.Fatalf("exit 0; stderr:\n%s", stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was made before the node stopped (%v)", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("files written next to the configuration: %v", entries)
			}
		})
	}
}
