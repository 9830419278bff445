package e2ee

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func FuzzDecodeBackupHeader(f *testing.F) {
	for _, n := range []int{0, 100} {
		enc, err := EncryptBackup(testPlaintext(n), testPassword, testBackupParams, detRand("fuzz header"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc[:BackupHeaderSize])
	}
	h := BackupHeader{Params: DefaultBackupParams()}
	f.Add(h.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeBackupHeader(b)
		if err != nil {
			if !errors.Is(err, ident.ErrMalformed) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !bytes.Equal(h.Encode(), b) {
			t.Fatal("decoded header does not re-encode to its input")
		}
		if err := h.Params.validate(); err != nil {
			t.Fatalf("decoded header with invalid params: %v", err)
		}
	})
}

// backupReaderErrors are the errors NewBackupReaderWithKey and its reader
// may return on hostile input; anything else is a bug.
var backupReaderErrors = []error{
	ident.ErrMalformed, ErrTruncated, ErrWrongPassword, ErrTampered,
	ErrBackupReordered, ErrBackupDuplicateChunk, ErrBackupTrailingData,
}

func FuzzBackupReader(f *testing.F) {
	k, err := DeriveBackupKey(testPassword, testBackupParams, detRand("fuzz reader key"))
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range []int{0, 1, 64, 150} {
		var out bytes.Buffer
		w, err := NewBackupWriterWithKey(&out, k, detRand("fuzz reader"))
		if err != nil {
			f.Fatal(err)
		}
		w.Write(testPlaintext(n))
		w.Close()
		f.Add(out.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewBackupReaderWithKey(bytes.NewReader(data), k)
		var pt []byte
		if err == nil {
			pt, err = io.ReadAll(r)
		}
		if err != nil {
			for _, want := range backupReaderErrors {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Only streams the key holder wrote authenticate, and the writer
		// is deterministic given the nonce prefix: re-encrypting must give
		// the input back.
		h, _ := DecodeBackupHeader(data[:BackupHeaderSize])
		var out bytes.Buffer
		kk := *k
		kk.params.ChunkSize = h.Params.ChunkSize
		w, err := NewBackupWriterWithKey(&out, &kk, bytes.NewReader(h.NoncePrefix[:]))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(pt)
		w.Close()
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("accepted a stream the writer would not produce")
		}
	})
}
