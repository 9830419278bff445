package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/node"
)

func TestCheckFiles(t *testing.T) {
	dir, err := os.MkdirTemp("", "volo-check-") // short: a unix socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "file")
	notKey := filepath.Join(dir, "not.skey")
	for _, f := range []string{file, notKey} {
		if err := os.WriteFile(f, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key, err := cardano.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "payment.skey")
	if err := cardano.WriteSigningKey(keyFile, key); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "node.socket")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	cardanoCfg := func(keyFile, socket string) node.Config {
		c := node.DefaultConfig()
		c.DataDir = filepath.Join(dir, "data")
		c.Chain.Backend, c.Chain.Network, c.Chain.PaymentKey, c.Chain.Socket = node.ChainCardano, "preprod", keyFile, socket
		return c
	}
	dataIn := func(d string) node.Config {
		c := node.DefaultConfig()
		c.DataDir = d
		return c
	}
	cases := []struct {
		name string
		cfg  node.Config
		want []string // nil: no error
	}{
		{"new data dir", dataIn(filepath.Join(dir, "a", "b")), nil},
		{"existing data dir", dataIn(dir), nil},
		{"data dir under a file", dataIn(filepath.Join(file, "data")), []string{"data_dir " + file + "/data: " + file + " is a file", "set data_dir"}},
		{"cardano, all there", cardanoCfg(keyFile, socket), nil},
		{"cardano, no key", cardanoCfg(filepath.Join(dir, "nokey", "p.skey"), socket), []string{
			"chain.payment_key: " + dir + "/nokey/p.skey does not exist",
			"install -d -m 0700 -o ",
			"cardano-cli address key-gen --signing-key-file " + dir + "/nokey/p.skey --verification-key-file " + dir + "/nokey/p.vkey",
			"--testnet-magic 1 --out-file " + dir + "/nokey/p.addr",
		}},
		{"cardano, not a key", cardanoCfg(notKey, socket), []string{"chain.payment_key: ", notKey, "cardano-cli address key-gen"}},
		{"cardano, no socket", cardanoCfg(keyFile, filepath.Join(dir, "none.socket")), []string{"chain.socket: " + dir + "/none.socket does not exist: start a cardano-node for preprod"}},
		{"cardano, socket is a file", cardanoCfg(keyFile, file), []string{"chain.socket: " + file + " is not a socket"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkFiles(c.cfg)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(c.want, "nothing written") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !os.IsNotExist(err) {
		t.Errorf("checkFiles made a directory (%v)", err)
	}
}
