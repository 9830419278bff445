package cardano

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blinklabs-io/gouroboros/ledger/common"
)

func TestSigningKeyRoundTrip(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "payment.skey")
	if err := WriteSigningKey(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kf map[string]string
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"type":        "PaymentSigningKeyShelley_ed25519",
		"description": "Payment Signing Key",
		"cborHex":     "5820" + hex.EncodeToString(k.Seed()),
	}
	for key, v := range want {
		if kf[key] != v {
			t.Errorf("%s = %q, want %q", key, kf[key], v)
		}
	}
	if len(kf) != len(want) {
		t.Errorf("key file has fields %v, want exactly %v", kf, want)
	}
	got, err := ReadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(k) {
		t.Fatal("read key differs from written key")
	}
	if err := WriteSigningKey(path, k); err == nil || !errors.Is(err, os.ErrExist) {
		t.Fatalf("overwrite: got %v, want an error wrapping os.ErrExist", err)
	}
}

// A key file as cardano-cli writes it (seed 00..1f).
const cliKeyFile = `{
    "type": "PaymentSigningKeyShelley_ed25519",
    "description": "Payment Signing Key",
    "cborHex": "5820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
}
`

func TestReadSigningKeyCardanoCLI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cli.skey")
	if err := os.WriteFile(path, []byte(cliKeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := ReadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	if !k.Equal(ed25519.NewKeyFromSeed(seed)) {
		t.Fatal("key does not come from the file's seed")
	}
}

func TestReadSigningKeyRefuses(t *testing.T) {
	good := "5820" + strings.Repeat("ab", 32)
	cases := []struct {
		name, body, want string
	}{
		{"not json", "hello", "not a cardano-cli key file"},
		{"verification key", `{"type":"PaymentVerificationKeyShelley_ed25519","cborHex":"` + good + `"}`, "key type"},
		{"extended key", `{"type":"PaymentExtendedSigningKeyShelley_ed25519_bip32","cborHex":"` + good + `"}`, "key type"},
		{"not hex", `{"type":"PaymentSigningKeyShelley_ed25519","cborHex":"zz"}`, "not hex"},
		{"short seed", `{"type":"PaymentSigningKeyShelley_ed25519","cborHex":"581f` + strings.Repeat("ab", 31) + `"}`, "32-byte"},
		{"long", `{"type":"PaymentSigningKeyShelley_ed25519","cborHex":"` + good + `00"}`, "32-byte"},
		{"no cbor head", `{"type":"PaymentSigningKeyShelley_ed25519","cborHex":"` + strings.Repeat("ab", 34) + `"}`, "32-byte"},
		{"huge", strings.Repeat(" ", maxKeyFileSize+1), "larger than"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, string(rune('a'+i))+".skey")
			if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ReadSigningKey(path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
	if _, err := ReadSigningKey(filepath.Join(dir, "missing.skey")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: got %v, want os.ErrNotExist", err)
	}
}

func TestEnterpriseAddress(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := k.Public().(ed25519.PublicKey)
	for _, n := range []Network{Mainnet, Preprod, Preview, Devnet} {
		addr, err := EnterpriseAddress(pub, n)
		if err != nil {
			t.Fatal(err)
		}
		s := addr.String()
		wantPrefix := "addr_test1"
		if n.ID == 1 {
			wantPrefix = "addr1"
		}
		if !strings.HasPrefix(s, wantPrefix) {
			t.Errorf("%s: address %s, want prefix %s", n, s, wantPrefix)
		}
		b, err := addr.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		h := KeyHash(pub)
		// Header: enterprise key-hash type (0b0110) and the network ID;
		// then the 28-byte key hash, and nothing else.
		if want := append([]byte{0x60 | n.ID}, h[:]...); !bytes.Equal(b, want) {
			t.Errorf("%s: address bytes %x, want %x", n, b, want)
		}
		back, err := common.NewAddress(s)
		if err != nil {
			t.Fatal(err)
		}
		if back.PaymentKeyHash() != h || back.NetworkId() != uint(n.ID) {
			t.Errorf("%s: bech32 round trip lost the key hash or network", n)
		}
	}
	if _, err := EnterpriseAddress(pub[:31], Mainnet); err == nil {
		t.Fatal("short public key accepted")
	}
}

func TestParseNetwork(t *testing.T) {
	cases := []struct {
		in   string
		want Network
	}{
		{"mainnet", Network{"mainnet", 764824073, 1}},
		{"preprod", Network{"preprod", 1, 0}},
		{"preview", Network{"preview", 2, 0}},
		{"devnet", Network{"devnet", 42, 0}},
		{" Preview ", Preview},
		{"764824073", Mainnet},
		{"42", Devnet},
		{"4", Network{"4", 4, 0}},
		{"1097911063", Network{"1097911063", 1097911063, 0}},
	}
	for _, c := range cases {
		got, err := ParseNetwork(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if got != c.want {
			t.Errorf("%q: got %+v, want %+v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"", "testnet", "-1", "4294967296", "0x2a"} {
		if _, err := ParseNetwork(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
