package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/node"
)

// checkFiles checks, before a node writes anything, the files and
// directories cfg names that must exist or be creatable: the data directory,
// and with chain.backend = "cardano" the payment key and the cardano-node
// socket. It returns every problem at once, each with how to fix it.
func checkFiles(cfg node.Config) error {
	var errs []error
	if err := checkDataDir(cfg.DataDir); err != nil {
		errs = append(errs, err)
	}
	if cfg.Chain.Backend == node.ChainCardano {
		if err := checkPaymentKey(cfg.Chain); err != nil {
			errs = append(errs, err)
		}
		if err := checkSocket(cfg.Chain); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("not started, nothing written:\n%w", errors.Join(errs...))
}

// checkDataDir checks that dir is a directory the user can write, or can
// be created: its nearest existing parent is a directory the user can
// write.
func checkDataDir(dir string) error {
	p := dir
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("data_dir %s: %s is a file, not a directory: set data_dir (or --data-dir) to a directory", dir, p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("data_dir %s: %w", dir, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("data_dir %s: %w", dir, err)
		}
		p = parent
	}
	if err := writable(p); err != nil {
		who := userName()
		if p == dir {
			return fmt.Errorf("data_dir %s: user %s cannot write it (%v): give it to them (sudo chown -R %s %s) or set data_dir (or --data-dir) to a directory they can write", dir, who, err, who, dir)
		}
		return fmt.Errorf("data_dir %s: user %s cannot create it in %s (%v): create it for them (sudo install -d -m 0700 -o %s %s) or set data_dir (or --data-dir) to a directory they can write", dir, who, p, err, who, dir)
	}
	return nil
}

// checkPaymentKey checks that the payment key exists and is a cardano-cli
// signing key, and says how to make one when it does not exist: volo-node
// has no command for it, cardano-cli has.
func checkPaymentKey(cc node.ChainConfig) error {
	path := cc.PaymentKey
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		base := strings.TrimSuffix(path, ".skey")
		netFlag := "--mainnet"
		if nw, err := cardano.ParseNetwork(cc.Network); err == nil && nw.Magic != cardano.Mainnet.Magic {
			netFlag = fmt.Sprintf("--testnet-magic %d", nw.Magic)
		}
		var mkdir string
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			mkdir = fmt.Sprintf("    sudo install -d -m 0700 -o %s %s\n", userName(), filepath.Dir(path))
		}
		return fmt.Errorf(`chain.payment_key: %s does not exist. Make the key that pays for the anchors with cardano-cli, as the user that runs volo-node:
%s    cardano-cli address key-gen --signing-key-file %s --verification-key-file %s.vkey
    cardano-cli address build --payment-verification-key-file %s.vkey %s --out-file %s.addr
  then fund the address in %s.addr (docs/anchoring.md); or set chain.payment_key to your key, or chain.backend = "none" to run without anchoring`,
			path, mkdir, path, base, base, netFlag, base, base)
	}
	if _, err := cardano.ReadSigningKey(path); err != nil {
		return fmt.Errorf("chain.payment_key: %w: it must be the signing key file cardano-cli address key-gen writes (--signing-key-file)", err)
	}
	return nil
}

// checkSocket checks that the cardano-node socket exists: the node dials
// it at start-up.
func checkSocket(cc node.ChainConfig) error {
	fi, err := os.Stat(cc.Socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf(`chain.socket: %s does not exist: start a cardano-node for %s with --socket-path %s (docs/anchoring.md), or set chain.socket to your cardano-node's socket, or chain.backend = "none" to run without anchoring`, cc.Socket, cc.Network, cc.Socket)
	case err != nil:
		return fmt.Errorf("chain.socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("chain.socket: %s is not a socket: set chain.socket to the path of the cardano-node's --socket-path", cc.Socket)
	}
	return nil
}

// userName is the name of the user running volo-node, for the commands
// the errors suggest.
func userName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "$USER"
}
