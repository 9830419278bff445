package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// IdentityFile is the name of the node's private key file in its data directory.
const IdentityFile = "identity.key"

// LoadOrCreateIdentity reads the node's libp2p private key from path, or
// creates an Ed25519 key there (mode 0600) when the file does not exist.
// created reports whether a new key was made.
func LoadOrCreateIdentity(path string) (key crypto.PrivKey, created bool, err error) {
	key, err = LoadIdentity(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("p2p: generate identity: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("p2p: encode identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("p2p: create identity directory: %w", err)
	}
	// O_EXCL: two processes racing on a fresh data directory must not end
	// up with different identities.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("p2p: create identity: %w", err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("p2p: write identity %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("p2p: sync identity %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("p2p: close identity %s: %w", path, err)
	}
	return key, true, nil
}

// LoadIdentity reads the node's private key from path. A key file readable
// by other users is refused: whoever holds it can impersonate the node.
func LoadIdentity(path string) (crypto.PrivKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("p2p: identity %s has mode %v: it must not be readable by others (chmod 600)", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity %s is not a libp2p private key: %w", path, err)
	}
	return key, nil
}

// PeerIDOf returns the peer ID of a private key.
func PeerIDOf(key crypto.PrivKey) (peer.ID, error) {
	return peer.IDFromPrivateKey(key)
}
