package e2ee

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/volo-chat/volo/ident"
)

// testBackupParams are cheap Argon2id parameters and small chunks so that
// tests make many chunks from little data.
var testBackupParams = BackupParams{Time: 1, MemoryKiB: 64, Threads: 1, ChunkSize: MinBackupChunkSize}

var testPassword = []byte("correct horse battery staple")

func testPlaintext(n int) []byte {
	b := make([]byte, n)
	detRand(fmt.Sprint("plaintext ", n)).Read(b)
	return b
}

// backupFrames splits an encrypted backup into its header and frames.
func backupFrames(t *testing.T, b []byte) (header []byte, frames [][]byte) {
	t.Helper()
	header, rest := b[:BackupHeaderSize], b[BackupHeaderSize:]
	for len(rest) > 0 {
		n := int(binary.BigEndian.Uint32(rest[5:9]))
		frames = append(frames, rest[:backupFrameHeaderSize+n])
		rest = rest[backupFrameHeaderSize+n:]
	}
	return header, frames
}

func joinBackup(header []byte, frames ...[]byte) []byte {
	return bytes.Join(append([][]byte{header}, frames...), nil)
}

func TestBackupRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 128, 129, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			pt := testPlaintext(n)
			enc, err := EncryptBackup(pt, testPassword, testBackupParams, nil)
			if err != nil {
				t.Fatal(err)
			}
			chunks := max(1, (n+63)/64)
			if want := BackupHeaderSize + n + chunks*(backupFrameHeaderSize+backupTagSize); len(enc) != want {
				t.Errorf("backup of %d bytes is %d bytes, want %d", n, len(enc), want)
			}
			got, err := DecryptBackup(enc, testPassword)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("round trip changed the plaintext")
			}
			// Streaming, one byte at a time on both sides.
			var out bytes.Buffer
			w, err := NewBackupWriter(&out, testPassword, testBackupParams, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range pt {
				if _, err := w.Write(pt[i : i+1]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := NewBackupReader(iotest.OneByteReader(&out), testPassword)
			if err != nil {
				t.Fatal(err)
			}
			got, err = io.ReadAll(iotest.OneByteReader(r))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatal("streaming round trip changed the plaintext")
			}
		})
	}
}

func TestBackupKeyReuse(t *testing.T) {
	k, err := DeriveBackupKey(testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	var backups [2][]byte
	for i := range backups {
		var out bytes.Buffer
		w, err := NewBackupWriterWithKey(&out, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "backup %d %s", i, strings.Repeat("x", 100))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		backups[i] = out.Bytes()
	}
	h0, _ := DecodeBackupHeader(backups[0][:BackupHeaderSize])
	h1, _ := DecodeBackupHeader(backups[1][:BackupHeaderSize])
	if h0.Salt != h1.Salt || h0.NoncePrefix == h1.NoncePrefix {
		t.Fatal("a reused key must keep its salt and draw a fresh nonce prefix per backup")
	}
	for i, b := range backups {
		r, err := NewBackupReaderWithKey(bytes.NewReader(b), k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("backup %d %s", i, strings.Repeat("x", 100)); string(got) != want {
			t.Fatalf("backup %d: got %q", i, got)
		}
		if _, err := DecryptBackup(b, testPassword); err != nil {
			t.Fatalf("backup %d with the password: %v", i, err)
		}
	}
	// A chunk spliced from the other backup (same key, same index) fails.
	_, f0 := backupFrames(t, backups[0])
	hdr1, f1 := backupFrames(t, backups[1])
	spliced := joinBackup(hdr1, f0[0], f1[1])
	if _, err := DecryptBackup(spliced, testPassword); !errors.Is(err, ErrTampered) {
		t.Fatalf("spliced chunk: got %v, want ErrTampered", err)
	}
}

func TestBackupWrongPassword(t *testing.T) {
	enc, err := EncryptBackup(testPlaintext(100), testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecryptBackup(enc, []byte("Correct horse battery staple")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: got %v, want ErrWrongPassword", err)
	}
	other, err := DeriveBackupKey(testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBackupReaderWithKey(bytes.NewReader(enc), other); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("key with another salt: got %v, want ErrWrongPassword", err)
	}
}

// TestBackupTamperEveryByte flips one bit at every position of a backup and
// checks that decryption fails with the error of the region it hit.
func TestBackupTamperEveryByte(t *testing.T) {
	enc, err := EncryptBackup(testPlaintext(150), testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	header, frames := backupFrames(t, enc)
	if len(frames) != 3 {
		t.Fatalf("%d frames, want 3", len(frames))
	}
	const (
		offParams = len(backupMagic) + 2     // time, memory, threads
		offChunk  = offParams + 9            // chunk size
		offSalt   = offChunk + 4             // salt
		offPrefix = offSalt + BackupSaltSize // nonce prefix
		offCheck  = offPrefix + backupNoncePrefixSize
	)
	allowed := func(pos int) []error {
		switch {
		case pos < offParams: // magic, version, KDF
			return []error{ident.ErrMalformed}
		case pos < offChunk: // KDF params: out of bounds or another key
			return []error{ident.ErrMalformed, ErrWrongPassword}
		case pos < offSalt: // chunk size: out of bounds or frames no longer fit
			return []error{ident.ErrMalformed, ErrTampered, ErrTruncated}
		case pos < offPrefix:
			return []error{ErrWrongPassword}
		case pos < offCheck:
			return []error{ErrTampered}
		case pos < len(header):
			return []error{ErrWrongPassword}
		}
		off := pos - len(header)
		for _, f := range frames {
			if off >= len(f) {
				off -= len(f)
				continue
			}
			switch {
			case off < 4: // index
				return []error{ErrBackupReordered, ErrBackupDuplicateChunk}
			case off < 5: // final flag
				return []error{ErrTampered}
			case off < 9: // length: too long runs past the end
				return []error{ErrTampered, ErrTruncated}
			default:
				return []error{ErrTampered}
			}
		}
		panic("position past the end")
	}
	for pos := range enc {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(enc)
			bad[pos] ^= bit
			_, err := DecryptBackup(bad, testPassword)
			if err == nil {
				t.Fatalf("byte %d bit %#x flipped: decryption succeeded", pos, bit)
			}
			ok := false
			for _, want := range allowed(pos) {
				ok = ok || errors.Is(err, want)
			}
			if !ok {
				t.Errorf("byte %d bit %#x flipped: got %v, want one of %v", pos, bit, err, allowed(pos))
			}
		}
	}
}

func TestBackupTruncated(t *testing.T) {
	enc, err := EncryptBackup(testPlaintext(150), testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(enc) {
		_, err := DecryptBackup(enc[:n], testPassword)
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("backup cut to %d of %d bytes: got %v, want ErrTruncated", n, len(enc), err)
		}
	}
	// The streaming reader hands out authentic chunks, then reports the
	// missing final chunk instead of io.EOF.
	header, frames := backupFrames(t, enc)
	r, err := NewBackupReader(bytes.NewReader(joinBackup(header, frames[0], frames[1])), testPassword)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("missing final chunk: got %v, want ErrTruncated", err)
	}
	if !bytes.Equal(got, testPlaintext(150)[:128]) {
		t.Fatal("chunks before the cut were not returned intact")
	}
}

func TestBackupReorderedDuplicatedAppended(t *testing.T) {
	enc, err := EncryptBackup(testPlaintext(250), testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, f := backupFrames(t, enc)
	if len(f) != 4 {
		t.Fatalf("%d frames, want 4", len(f))
	}
	// relabel returns frame with its clear index rewritten.
	relabel := func(frame []byte, i uint32) []byte {
		c := bytes.Clone(frame)
		binary.BigEndian.PutUint32(c, i)
		return c
	}
	// setFinal returns frame with its clear final flag set.
	setFinal := func(frame []byte) []byte {
		c := bytes.Clone(frame)
		c[4] = 1
		return c
	}
	tests := []struct {
		name   string
		backup []byte
		want   error
	}{
		{"swapped", joinBackup(h, f[0], f[2], f[1], f[3]), ErrBackupReordered},
		{"dropped middle", joinBackup(h, f[0], f[2], f[3]), ErrBackupReordered},
		{"duplicated", joinBackup(h, f[0], f[1], f[1], f[2], f[3]), ErrBackupDuplicateChunk},
		{"swapped and relabelled", joinBackup(h, f[0], relabel(f[2], 1), relabel(f[1], 2), f[3]), ErrTampered},
		{"dropped tail", joinBackup(h, f[0], f[1], f[2]), ErrTruncated},
		{"dropped tail, flagged final", joinBackup(h, f[0], f[1], setFinal(f[2])), ErrTampered},
		{"final chunk moved up", joinBackup(h, f[0], relabel(f[3], 1)), ErrTampered},
		{"appended byte", append(bytes.Clone(enc), 0), ErrBackupTrailingData},
		{"appended final chunk again", joinBackup(h, f[0], f[1], f[2], f[3], f[3]), ErrBackupTrailingData},
		{"header only", h, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecryptBackup(tt.backup, testPassword)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeBackupHeader(t *testing.T) {
	k, err := DeriveBackupKey(testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := NewBackupWriterWithKey(&out, k, nil); err != nil {
		t.Fatal(err)
	}
	good := out.Bytes()
	h, err := DecodeBackupHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Encode(), good) || h.Params != testBackupParams {
		t.Fatal("header does not round trip")
	}
	mutate := func(f func(h *BackupHeader)) []byte {
		c := h
		f(&c)
		return c.Encode()
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:BackupHeaderSize-1], ErrTruncated},
		{"long", append(bytes.Clone(good), 0), ident.ErrMalformed},
		{"magic", append([]byte("VOLOBKUQ"), good[8:]...), ident.ErrMalformed},
		{"version", append(append(bytes.Clone(good[:8]), 2), good[9:]...), ident.ErrMalformed},
		{"kdf", append(append(bytes.Clone(good[:9]), 2), good[10:]...), ident.ErrMalformed},
		{"time 0", mutate(func(h *BackupHeader) { h.Params.Time = 0 }), ident.ErrMalformed},
		{"time too high", mutate(func(h *BackupHeader) { h.Params.Time = MaxBackupKDFTime + 1 }), ident.ErrMalformed},
		{"memory terabytes", mutate(func(h *BackupHeader) { h.Params.MemoryKiB = 1 << 31 }), ident.ErrMalformed},
		{"memory below 8 KiB per lane", mutate(func(h *BackupHeader) { h.Params.Threads = 9 }), ident.ErrMalformed},
		{"threads 0", mutate(func(h *BackupHeader) { h.Params.Threads = 0 }), ident.ErrMalformed},
		{"chunk too small", mutate(func(h *BackupHeader) { h.Params.ChunkSize = MinBackupChunkSize - 1 }), ident.ErrMalformed},
		{"chunk too big", mutate(func(h *BackupHeader) { h.Params.ChunkSize = MaxBackupChunkSize + 1 }), ident.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeBackupHeader(tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if err := (BackupParams{Time: 1, MemoryKiB: 1 << 30, Threads: 1, ChunkSize: 1 << 16}).validate(); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("writer params above the bounds: got %v", err)
	}
}

func TestBackupKeyNotPrinted(t *testing.T) {
	k, err := DeriveBackupKey(testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v", *k), fmt.Sprintf("%+v", *k), fmt.Sprintf("%#v", *k), fmt.Sprintf("%s", k)} {
		if s != "BackupKey(redacted)" {
			t.Fatalf("key printed as %q", s)
		}
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk full")
	}
	w.after--
	return len(p), nil
}

func TestBackupWriterErrors(t *testing.T) {
	k, err := DeriveBackupKey(testPassword, testBackupParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBackupWriterWithKey(&failingWriter{}, k, nil); err == nil {
		t.Fatal("header write error not reported")
	}
	w, err := NewBackupWriterWithKey(&failingWriter{after: 1}, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 200)); err == nil {
		t.Fatal("chunk write error not reported")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a write error reported success")
	}
	var out bytes.Buffer
	w, _ = NewBackupWriterWithKey(&out, k, nil)
	w.Close()
	if _, err := w.Write([]byte("late")); err == nil {
		t.Fatal("write after Close accepted")
	}
	if _, err := DeriveBackupKey(testPassword, BackupParams{}, nil); !errors.Is(err, ident.ErrMalformed) {
		t.Fatalf("zero params: got %v", err)
	}
	if _, err := DeriveBackupKey(testPassword, testBackupParams, iotest.ErrReader(errors.New("no entropy"))); err == nil {
		t.Fatal("rand failure not reported")
	}
}

func BenchmarkBackupKDF(b *testing.B) {
	p := DefaultBackupParams()
	rnd := detRand("bench")
	for b.Loop() {
		if _, err := DeriveBackupKey(testPassword, p, rnd); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/derive")
}

const benchBackupSize = 16 << 20

func BenchmarkBackupEncrypt(b *testing.B) {
	k, err := DeriveBackupKey(testPassword, DefaultBackupParams(), nil)
	if err != nil {
		b.Fatal(err)
	}
	pt := testPlaintext(benchBackupSize)
	b.SetBytes(benchBackupSize)
	for b.Loop() {
		w, err := NewBackupWriterWithKey(io.Discard, k, nil)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(pt)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBackupDecrypt(b *testing.B) {
	k, err := DeriveBackupKey(testPassword, DefaultBackupParams(), nil)
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	w, _ := NewBackupWriterWithKey(&out, k, nil)
	w.Write(testPlaintext(benchBackupSize))
	w.Close()
	enc := out.Bytes()
	b.SetBytes(benchBackupSize)
	for b.Loop() {
		r, err := NewBackupReaderWithKey(bytes.NewReader(enc), k)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
