package e2ee

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// backupVector fixes every input of EncryptBackup: the password, the
// parameters, the plaintext, and the random bytes (salt, then nonce prefix).
type backupVector struct {
	Comment     string       `json:"comment"`
	Password    string       `json:"password"`
	Params      BackupParams `json:"params"`
	Salt        string       `json:"salt"`
	NoncePrefix string       `json:"nonce_prefix"`
	Plaintext   string       `json:"plaintext"`
	Header      string       `json:"header"`
	Backup      string       `json:"backup"`
}

// makeBackupVector fills in Header and Backup from the inputs of v.
func makeBackupVector(t *testing.T, v backupVector) backupVector {
	t.Helper()
	rnd := bytes.NewReader(append(mustHex(t, v.Salt), mustHex(t, v.NoncePrefix)...))
	enc, err := EncryptBackup(mustHex(t, v.Plaintext), []byte(v.Password), v.Params, rnd)
	if err != nil {
		t.Fatal(err)
	}
	v.Header = hex.EncodeToString(enc[:BackupHeaderSize])
	v.Backup = hex.EncodeToString(enc)
	return v
}

func TestBackupVectors(t *testing.T) {
	got := makeBackupVector(t, backupVector{
		Comment:     "150-byte plaintext in 64-byte chunks: three frames (64, 64 and 22 bytes of plaintext, the last final)",
		Password:    "correct horse battery staple",
		Params:      BackupParams{Time: 1, MemoryKiB: 64, Threads: 1, ChunkSize: 64},
		Salt:        hex.EncodeToString(bytes.Repeat([]byte{0x5a}, BackupSaltSize)),
		NoncePrefix: "0001020304050607",
		Plaintext:   hex.EncodeToString(bytes.Repeat([]byte("Volo backup vector. "), 8)[:150]),
	})
	checkVectorFile(t, "backup_vectors.json", got)

	// Decode the committed bytes independently of generation.
	var v backupVector
	readVectorFile(t, "backup_vectors.json", &v)
	h, err := DecodeBackupHeader(mustHex(t, v.Header))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(h.Encode()) != v.Header || v.Backup[:2*BackupHeaderSize] != v.Header {
		t.Fatal("header does not re-encode to the vector bytes")
	}
	if h.Params != v.Params || hex.EncodeToString(h.Salt[:]) != v.Salt || hex.EncodeToString(h.NoncePrefix[:]) != v.NoncePrefix {
		t.Fatal("header fields differ from the vector inputs")
	}
	pt, err := DecryptBackup(mustHex(t, v.Backup), []byte(v.Password))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(pt) != v.Plaintext {
		t.Fatal("vector decrypts to another plaintext")
	}
}
