// Package cardano is Volo's Cardano backend: it anchors Merkle roots in
// Conway-era transactions through a cardano-node's local socket and reads
// blocks back over node-to-client or node-to-node connections.
package cardano

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/blinklabs-io/gouroboros/ledger/common"
)

// SigningKeyType is the envelope type cardano-cli writes for a payment
// signing key.
const SigningKeyType = "PaymentSigningKeyShelley_ed25519"

const signingKeyDescription = "Payment Signing Key"

// maxKeyFileSize bounds what ReadSigningKey reads: a key file is about
// 200 bytes.
const maxKeyFileSize = 4096

// cborSeedPrefix is the CBOR head of a 32-byte byte string, which
// cardano-cli's cborHex wraps around the Ed25519 seed.
var cborSeedPrefix = []byte{0x58, ed25519.SeedSize}

// keyFile is cardano-cli's text envelope.
type keyFile struct {
	Type        string `json:"type"`
	Description string `json:"description"`
	CBORHex     string `json:"cborHex"`
}

// GenerateSigningKey makes a new Ed25519 payment signing key.
func GenerateSigningKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cardano: generate signing key: %w", err)
	}
	return k, nil
}

// WriteSigningKey saves k at path in cardano-cli's .skey format, readable
// by its owner only. It refuses to overwrite an existing file.
func WriteSigningKey(path string, k ed25519.PrivateKey) error {
	if len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("cardano: write signing key %s: key is %d bytes, want %d", path, len(k), ed25519.PrivateKeySize)
	}
	body, err := json.MarshalIndent(keyFile{
		Type:        SigningKeyType,
		Description: signingKeyDescription,
		CBORHex:     hex.EncodeToString(append(bytes.Clone(cborSeedPrefix), k.Seed()...)),
	}, "", "    ")
	if err != nil {
		return fmt.Errorf("cardano: write signing key %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cardano: write signing key: %w", err)
	}
	if _, err := f.Write(append(body, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("cardano: write signing key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cardano: write signing key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cardano: write signing key %s: %w", path, err)
	}
	return nil
}

// ReadSigningKey loads a payment signing key that cardano-cli (or
// WriteSigningKey) saved at path.
func ReadSigningKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cardano: read signing key: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxKeyFileSize+1)); err != nil {
		return nil, fmt.Errorf("cardano: read signing key %s: %w", path, err)
	}
	if buf.Len() > maxKeyFileSize {
		return nil, fmt.Errorf("cardano: read signing key %s: file larger than %d bytes", path, maxKeyFileSize)
	}
	k, err := parseSigningKey(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("cardano: read signing key %s: %w", path, err)
	}
	return k, nil
}

func parseSigningKey(b []byte) (ed25519.PrivateKey, error) {
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("not a cardano-cli key file: %w", err)
	}
	if kf.Type != SigningKeyType {
		return nil, fmt.Errorf("key type %q, want %q", kf.Type, SigningKeyType)
	}
	raw, err := hex.DecodeString(kf.CBORHex)
	if err != nil {
		return nil, fmt.Errorf("cborHex is not hex: %w", err)
	}
	if len(raw) != len(cborSeedPrefix)+ed25519.SeedSize || !bytes.HasPrefix(raw, cborSeedPrefix) {
		return nil, errors.New("cborHex is not a CBOR byte string of a 32-byte Ed25519 seed")
	}
	return ed25519.NewKeyFromSeed(raw[len(cborSeedPrefix):]), nil
}

// KeyHash is the payment credential of pub: its Blake2b-224 hash.
func KeyHash(pub ed25519.PublicKey) common.Blake2b224 {
	return common.Blake2b224Hash(pub)
}

// EnterpriseAddress is the address paid to pub's key hash with no stake
// credential, on net.
func EnterpriseAddress(pub ed25519.PublicKey, net Network) (common.Address, error) {
	if len(pub) != ed25519.PublicKeySize {
		return common.Address{}, fmt.Errorf("cardano: enterprise address: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	h := KeyHash(pub)
	addr, err := common.NewAddressFromParts(common.AddressTypeKeyNone, net.ID, h[:], nil)
	if err != nil {
		return common.Address{}, fmt.Errorf("cardano: enterprise address on %s: %w", net, err)
	}
	return addr, nil
}
