package e2ee

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/volo-chat/volo/ident"

	"golang.org/x/crypto/argon2"
)

// Backup stream format (docs/protocol.md, "Backup encryption"):
//
//	header || frame_0 || frame_1 || ... || frame_last
//
// The header is a fixed-size binary record holding everything needed to
// decrypt except the password. Each frame carries one AES-256-GCM sealed
// chunk of at most ChunkSize plaintext bytes; every frame but the last holds
// exactly ChunkSize bytes, and only the last has the final flag set.
const (
	backupMagic = "VOLOBKUP"
	// BackupVersion is the only backup format version this package reads and writes.
	BackupVersion = 1
	// backupKDFArgon2id names Argon2id (version 0x13) in the header.
	backupKDFArgon2id = 1

	// BackupHeaderSize is the size in bytes of an encoded BackupHeader.
	BackupHeaderSize = len(backupMagic) + 1 + 1 + 4 + 4 + 1 + 4 + BackupSaltSize + backupNoncePrefixSize + backupKeyCheckSize
	// BackupSaltSize is the size of the random Argon2id salt.
	BackupSaltSize = 16
	// backupNoncePrefixSize is the size of the random per-backup nonce prefix.
	backupNoncePrefixSize = 8
	// backupKeyCheckSize is the size of the password check value in the header.
	backupKeyCheckSize = 16
	// backupFrameHeaderSize is index (4) || final flag (1) || ciphertext length (4).
	backupFrameHeaderSize = 9
	backupTagSize         = 16
	backupKeySize         = 32

	// DefaultBackupChunkSize is the plaintext size of every chunk but the last.
	DefaultBackupChunkSize = 64 << 10
	// MinBackupChunkSize and MaxBackupChunkSize bound the chunk size a
	// header may name, so a hostile header cannot make a reader allocate
	// more than MaxBackupChunkSize (plus a tag) per stream.
	MinBackupChunkSize = 64
	MaxBackupChunkSize = 1 << 20
	// maxBackupChunks is the number of chunk indexes (uint32) in one stream.
	maxBackupChunks = math.MaxUint32 + 1

	// Argon2id defaults: RFC 9106's second recommended option.
	DefaultBackupKDFTime      = 3
	DefaultBackupKDFMemoryKiB = 64 << 10
	DefaultBackupKDFThreads   = 4
	// Upper bounds a header may name (1 GiB of memory, 16 passes, 16
	// lanes), so a hostile header cannot make a reader allocate terabytes
	// or spin for hours. The lower bounds are Argon2's own (time >= 1,
	// threads >= 1, memory >= 8 KiB per lane).
	MaxBackupKDFTime      = 16
	MaxBackupKDFMemoryKiB = 1 << 20
	MaxBackupKDFThreads   = 16

	// KDF labels (HKDF-SHA-256 info strings) over the Argon2id output.
	backupChunkKeyLabel = "volo/v1/backup chunk key"
	backupKeyCheckLabel = "volo/v1/backup key check"
)

// Errors reported when reading a backup. Each names one failure mode;
// callers branch on them with errors.Is.
var (
	// ErrWrongPassword reports that the password (or BackupKey) does not
	// match the backup header. A modified salt or KDF parameter in the
	// header also shows as ErrWrongPassword, since it changes the key.
	ErrWrongPassword = errors.New("e2ee: wrong backup password")
	// ErrTampered reports ciphertext or authenticated data that fails
	// authentication: some byte was changed.
	ErrTampered = errors.New("e2ee: tampered ciphertext")
	// ErrTruncated reports input that ends early: inside the header, inside
	// a frame, or after a non-final chunk (the final chunk is missing).
	ErrTruncated = errors.New("e2ee: truncated input")
	// ErrBackupReordered reports a chunk that appears after a position it
	// does not belong to (chunks were reordered or one was dropped).
	ErrBackupReordered = errors.New("e2ee: backup chunk out of order")
	// ErrBackupDuplicateChunk reports a chunk that was already read.
	ErrBackupDuplicateChunk = errors.New("e2ee: backup chunk duplicated")
	// ErrBackupTrailingData reports bytes after the final chunk.
	ErrBackupTrailingData = errors.New("e2ee: data after the final backup chunk")
)

// BackupParams are the cost parameters of the password KDF (Argon2id) and
// the chunk size of the stream. All of them are stored in the header.
type BackupParams struct {
	Time      uint32 `json:"time"`       // Argon2id passes
	MemoryKiB uint32 `json:"memory_kib"` // Argon2id memory in KiB
	Threads   uint8  `json:"threads"`    // Argon2id lanes
	ChunkSize uint32 `json:"chunk_size"` // plaintext bytes per chunk
}

// DefaultBackupParams returns t=3, m=64 MiB, p=4 and 64 KiB chunks.
func DefaultBackupParams() BackupParams {
	return BackupParams{
		Time:      DefaultBackupKDFTime,
		MemoryKiB: DefaultBackupKDFMemoryKiB,
		Threads:   DefaultBackupKDFThreads,
		ChunkSize: DefaultBackupChunkSize,
	}
}

func (p BackupParams) validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxBackupKDFTime:
		return fmt.Errorf("e2ee: backup params: Argon2id time %d outside [1, %d]: %w", p.Time, MaxBackupKDFTime, ident.ErrMalformed)
	case p.Threads < 1 || p.Threads > MaxBackupKDFThreads:
		return fmt.Errorf("e2ee: backup params: Argon2id threads %d outside [1, %d]: %w", p.Threads, MaxBackupKDFThreads, ident.ErrMalformed)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxBackupKDFMemoryKiB:
		return fmt.Errorf("e2ee: backup params: Argon2id memory %d KiB outside [%d, %d]: %w", p.MemoryKiB, 8*uint32(p.Threads), MaxBackupKDFMemoryKiB, ident.ErrMalformed)
	case p.ChunkSize < MinBackupChunkSize || p.ChunkSize > MaxBackupChunkSize:
		return fmt.Errorf("e2ee: backup params: chunk size %d outside [%d, %d]: %w", p.ChunkSize, MinBackupChunkSize, MaxBackupChunkSize, ident.ErrMalformed)
	}
	return nil
}

// BackupHeader is the clear header at the start of every backup stream.
type BackupHeader struct {
	Params      BackupParams
	Salt        [BackupSaltSize]byte
	NoncePrefix [backupNoncePrefixSize]byte
	KeyCheck    [backupKeyCheckSize]byte
}

// Encode returns the BackupHeaderSize-byte encoding of h (big-endian):
//
//	magic "VOLOBKUP" | version u8 | kdf u8 | time u32 | memory_kib u32 |
//	threads u8 | chunk_size u32 | salt [16] | nonce_prefix [8] | key_check [16]
func (h BackupHeader) Encode() []byte {
	b := make([]byte, 0, BackupHeaderSize)
	b = append(b, backupMagic...)
	b = append(b, BackupVersion, backupKDFArgon2id)
	b = binary.BigEndian.AppendUint32(b, h.Params.Time)
	b = binary.BigEndian.AppendUint32(b, h.Params.MemoryKiB)
	b = append(b, h.Params.Threads)
	b = binary.BigEndian.AppendUint32(b, h.Params.ChunkSize)
	b = append(b, h.Salt[:]...)
	b = append(b, h.NoncePrefix[:]...)
	b = append(b, h.KeyCheck[:]...)
	return b
}

// DecodeBackupHeader decodes exactly BackupHeaderSize bytes and checks the
// magic, version, KDF and that every parameter is within its bounds.
func DecodeBackupHeader(b []byte) (BackupHeader, error) {
	var h BackupHeader
	if len(b) < BackupHeaderSize {
		return h, fmt.Errorf("e2ee: decode backup header: %d bytes, want %d: %w", len(b), BackupHeaderSize, ErrTruncated)
	}
	if len(b) > BackupHeaderSize {
		return h, fmt.Errorf("e2ee: decode backup header: %d bytes, want %d: %w", len(b), BackupHeaderSize, ident.ErrMalformed)
	}
	if string(b[:len(backupMagic)]) != backupMagic {
		return h, fmt.Errorf("e2ee: decode backup header: not a Volo backup (bad magic): %w", ident.ErrMalformed)
	}
	p := b[len(backupMagic):]
	if p[0] != BackupVersion {
		return h, fmt.Errorf("e2ee: decode backup header: unsupported version %d: %w", p[0], ident.ErrMalformed)
	}
	if p[1] != backupKDFArgon2id {
		return h, fmt.Errorf("e2ee: decode backup header: unsupported KDF %d: %w", p[1], ident.ErrMalformed)
	}
	p = p[2:]
	h.Params.Time = binary.BigEndian.Uint32(p[0:4])
	h.Params.MemoryKiB = binary.BigEndian.Uint32(p[4:8])
	h.Params.Threads = p[8]
	h.Params.ChunkSize = binary.BigEndian.Uint32(p[9:13])
	p = p[13:]
	p = p[copy(h.Salt[:], p):]
	p = p[copy(h.NoncePrefix[:], p):]
	copy(h.KeyCheck[:], p)
	if err := h.Params.validate(); err != nil {
		return BackupHeader{}, fmt.Errorf("e2ee: decode backup header: %w", err)
	}
	return h, nil
}

// BackupKey is a key derived from a backup password with Argon2id, with the
// salt and parameters it was derived for. Argon2id is deliberately slow:
// derive once and reuse the key for many backups (each backup still gets
// its own chunk key from a fresh nonce prefix). String never prints it.
type BackupKey struct {
	params BackupParams
	salt   [BackupSaltSize]byte
	key    [backupKeySize]byte
}

// DeriveBackupKey draws a fresh random salt from rand (crypto/rand if nil)
// and derives a key from password with Argon2id and params.
func DeriveBackupKey(password []byte, params BackupParams, rand io.Reader) (*BackupKey, error) {
	if err := params.validate(); err != nil {
		return nil, err
	}
	k := &BackupKey{params: params}
	if _, err := io.ReadFull(randOrDefault(rand), k.salt[:]); err != nil {
		return nil, fmt.Errorf("e2ee: backup salt: %w", err)
	}
	k.derive(password)
	return k, nil
}

// DeriveKey derives the key that the backup with header h was written
// with, if password is right. It checks the header's key check value and
// returns ErrWrongPassword on mismatch.
func (h BackupHeader) DeriveKey(password []byte) (*BackupKey, error) {
	if err := h.Params.validate(); err != nil {
		return nil, err
	}
	k := &BackupKey{params: h.Params, salt: h.Salt}
	k.derive(password)
	if err := k.check(h); err != nil {
		k.Destroy()
		return nil, err
	}
	return k, nil
}

func (k *BackupKey) derive(password []byte) {
	out := argon2.IDKey(password, k.salt[:], k.params.Time, k.params.MemoryKiB, k.params.Threads, backupKeySize)
	copy(k.key[:], out)
	clear(out)
}

// Params returns the parameters the key was derived with.
func (k *BackupKey) Params() BackupParams { return k.params }

// Destroy overwrites the key material.
func (k *BackupKey) Destroy() { clear(k.key[:]) }

// String returns a placeholder; the key is never printed.
func (k BackupKey) String() string { return "BackupKey(redacted)" }

// GoString returns a placeholder; the key is never printed.
func (k BackupKey) GoString() string { return "BackupKey(redacted)" }

func (k *BackupKey) keyCheck() [backupKeyCheckSize]byte {
	var c [backupKeyCheckSize]byte
	copy(c[:], hkdfSHA256(k.key[:], nil, backupKeyCheckLabel, backupKeyCheckSize))
	return c
}

// check reports whether k is the key of the backup with header h.
func (k *BackupKey) check(h BackupHeader) error {
	if k.params.Time != h.Params.Time || k.params.MemoryKiB != h.Params.MemoryKiB ||
		k.params.Threads != h.Params.Threads || k.salt != h.Salt {
		return fmt.Errorf("e2ee: backup key was derived for another salt or KDF parameters: %w", ErrWrongPassword)
	}
	c := k.keyCheck()
	if subtle.ConstantTimeCompare(c[:], h.KeyCheck[:]) != 1 {
		return fmt.Errorf("e2ee: backup key check mismatch: %w", ErrWrongPassword)
	}
	return nil
}

// backupStream holds what writer and reader share: the chunk AEAD, the
// header bytes bound into every chunk and the nonce prefix.
type backupStream struct {
	aead      cipher.AEAD
	header    []byte
	prefix    [backupNoncePrefixSize]byte
	chunkSize int
	nonce     [12]byte
	aad       []byte
}

func newBackupStream(k *BackupKey, h BackupHeader) *backupStream {
	ck := hkdfSHA256(k.key[:], h.NoncePrefix[:], backupChunkKeyLabel, backupKeySize)
	defer clear(ck)
	block, err := aes.NewCipher(ck)
	if err != nil {
		panic(err) // 32-byte key
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	s := &backupStream{aead: aead, header: h.Encode(), prefix: h.NoncePrefix, chunkSize: int(h.Params.ChunkSize)}
	s.aad = make([]byte, 0, len(s.header)+5)
	return s
}

// chunkParams sets s.nonce and returns the associated data of chunk i:
// nonce = nonce_prefix || u32(i), aad = header || u32(i) || final.
func (s *backupStream) chunkParams(i uint32, final bool) []byte {
	copy(s.nonce[:], s.prefix[:])
	binary.BigEndian.PutUint32(s.nonce[backupNoncePrefixSize:], i)
	aad := append(s.aad[:0], s.header...)
	aad = binary.BigEndian.AppendUint32(aad, i)
	if final {
		aad = append(aad, 1)
	} else {
		aad = append(aad, 0)
	}
	return aad
}

// NewBackupWriter derives a key from password with params (see
// DeriveBackupKey) and returns a writer that encrypts everything written to
// it into w. Close must be called: it writes the final chunk.
func NewBackupWriter(w io.Writer, password []byte, params BackupParams, rand io.Reader) (io.WriteCloser, error) {
	k, err := DeriveBackupKey(password, params, rand)
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	return NewBackupWriterWithKey(w, k, rand)
}

// NewBackupWriterWithKey is NewBackupWriter with a key derived beforehand.
// It draws a fresh nonce prefix from rand (crypto/rand if nil), writes the
// header to w and returns the writer. The writer does not keep k.
func NewBackupWriterWithKey(w io.Writer, k *BackupKey, rand io.Reader) (io.WriteCloser, error) {
	if err := k.params.validate(); err != nil {
		return nil, err
	}
	h := BackupHeader{Params: k.params, Salt: k.salt, KeyCheck: k.keyCheck()}
	if _, err := io.ReadFull(randOrDefault(rand), h.NoncePrefix[:]); err != nil {
		return nil, fmt.Errorf("e2ee: backup nonce prefix: %w", err)
	}
	s := newBackupStream(k, h)
	if _, err := w.Write(s.header); err != nil {
		return nil, fmt.Errorf("e2ee: write backup header: %w", err)
	}
	return &backupWriter{
		w:   w,
		s:   s,
		buf: make([]byte, 0, s.chunkSize),
		out: make([]byte, backupFrameHeaderSize+s.chunkSize+backupTagSize),
	}, nil
}

type backupWriter struct {
	w      io.Writer
	s      *backupStream
	buf    []byte // pending plaintext, at most chunkSize
	out    []byte // frame buffer
	index  uint64 // index of the next chunk
	err    error
	closed bool
}

// Write buffers p and writes every chunk that is known not to be the last.
func (bw *backupWriter) Write(p []byte) (int, error) {
	if bw.closed {
		return 0, errors.New("e2ee: write to closed backup writer")
	}
	if bw.err != nil {
		return 0, bw.err
	}
	n := 0
	for len(p) > 0 {
		if len(bw.buf) == bw.s.chunkSize {
			// More data follows, so the full buffer is not the final chunk.
			if err := bw.flush(false); err != nil {
				return n, err
			}
		}
		c := copy(bw.buf[len(bw.buf):bw.s.chunkSize], p)
		bw.buf = bw.buf[:len(bw.buf)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

// Close writes the final chunk (possibly empty, if nothing was written).
// It does not close the underlying writer.
func (bw *backupWriter) Close() error {
	if bw.closed {
		return bw.err
	}
	bw.closed = true
	if bw.err != nil {
		return bw.err
	}
	err := bw.flush(true)
	clear(bw.buf[:cap(bw.buf)])
	return err
}

func (bw *backupWriter) flush(final bool) error {
	if bw.index >= maxBackupChunks {
		bw.err = fmt.Errorf("e2ee: backup longer than %d chunks", uint64(maxBackupChunks))
		return bw.err
	}
	i := uint32(bw.index)
	aad := bw.s.chunkParams(i, final)
	f := bw.out[:backupFrameHeaderSize]
	binary.BigEndian.PutUint32(f[0:4], i)
	f[4] = 0
	if final {
		f[4] = 1
	}
	binary.BigEndian.PutUint32(f[5:9], uint32(len(bw.buf)+backupTagSize))
	frame := bw.s.aead.Seal(f, bw.s.nonce[:], bw.buf, aad)
	if _, err := bw.w.Write(frame); err != nil {
		bw.err = fmt.Errorf("e2ee: write backup chunk %d: %w", i, err)
		return bw.err
	}
	bw.buf = bw.buf[:0]
	bw.index++
	return nil
}

// ReadBackupHeader reads and decodes the header at the start of r, for a
// caller that wants to derive the key itself (BackupHeader.DeriveKey).
func ReadBackupHeader(r io.Reader) (BackupHeader, error) {
	b := make([]byte, BackupHeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return BackupHeader{}, fmt.Errorf("e2ee: read backup header: %w", ErrTruncated)
		}
		return BackupHeader{}, fmt.Errorf("e2ee: read backup header: %w", err)
	}
	return DecodeBackupHeader(b)
}

// NewBackupReader reads the header from r, derives the key from password
// and returns a reader of the plaintext. Each chunk is authenticated before
// any of its bytes are returned, and io.EOF is returned only after the
// final chunk was authenticated and r is at its end. Plaintext read before
// an error must be discarded by the caller: it is authentic but incomplete.
func NewBackupReader(r io.Reader, password []byte) (io.Reader, error) {
	h, err := ReadBackupHeader(r)
	if err != nil {
		return nil, err
	}
	k, err := h.DeriveKey(password)
	if err != nil {
		return nil, err
	}
	defer k.Destroy()
	return newBackupReader(r, k, h), nil
}

// NewBackupReaderWithKey is NewBackupReader with a key derived beforehand.
// A key derived for another salt or other parameters gives ErrWrongPassword.
func NewBackupReaderWithKey(r io.Reader, k *BackupKey) (io.Reader, error) {
	h, err := ReadBackupHeader(r)
	if err != nil {
		return nil, err
	}
	if err := k.check(h); err != nil {
		return nil, err
	}
	return newBackupReader(r, k, h), nil
}

func newBackupReader(r io.Reader, k *BackupKey, h BackupHeader) *backupReader {
	s := newBackupStream(k, h)
	return &backupReader{r: r, s: s, buf: make([]byte, s.chunkSize+backupTagSize)}
}

type backupReader struct {
	r     io.Reader
	s     *backupStream
	buf   []byte
	plain []byte // authenticated plaintext not yet returned
	index uint64 // index of the next chunk expected
	done  bool   // final chunk read
	err   error  // sticky
}

func (br *backupReader) Read(p []byte) (int, error) {
	for len(br.plain) == 0 {
		if br.err != nil {
			return 0, br.err
		}
		if br.done {
			return 0, io.EOF
		}
		br.err = br.next()
	}
	n := copy(p, br.plain)
	br.plain = br.plain[n:]
	return n, nil
}

// next reads, checks and opens one frame into br.plain.
func (br *backupReader) next() error {
	var fh [backupFrameHeaderSize]byte
	if _, err := io.ReadFull(br.r, fh[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("e2ee: backup ends after chunk %d without the final chunk: %w", int64(br.index)-1, ErrTruncated)
		}
		return br.readErr(err)
	}
	idx := binary.BigEndian.Uint32(fh[0:4])
	flag := fh[4]
	n := binary.BigEndian.Uint32(fh[5:9])
	switch {
	case uint64(idx) < br.index:
		return fmt.Errorf("e2ee: backup chunk %d again at position %d: %w", idx, br.index, ErrBackupDuplicateChunk)
	case uint64(idx) > br.index:
		return fmt.Errorf("e2ee: backup chunk %d at position %d: %w", idx, br.index, ErrBackupReordered)
	case flag > 1:
		return fmt.Errorf("e2ee: backup chunk %d: bad final flag %d: %w", idx, flag, ErrTampered)
	}
	final := flag == 1
	full := uint32(br.s.chunkSize + backupTagSize)
	if n < backupTagSize || n > full || (!final && n != full) {
		return fmt.Errorf("e2ee: backup chunk %d: bad length %d: %w", idx, n, ErrTampered)
	}
	ct := br.buf[:n]
	if _, err := io.ReadFull(br.r, ct); err != nil {
		return br.readErr(err)
	}
	aad := br.s.chunkParams(idx, final)
	pt, err := br.s.aead.Open(ct[:0], br.s.nonce[:], ct, aad)
	if err != nil {
		return fmt.Errorf("e2ee: backup chunk %d fails authentication: %w", idx, ErrTampered)
	}
	if final {
		var one [1]byte
		m, err := io.ReadFull(br.r, one[:])
		if m > 0 {
			return fmt.Errorf("e2ee: backup after final chunk %d: %w", idx, ErrBackupTrailingData)
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("e2ee: backup after final chunk %d: %w", idx, err)
		}
		br.done = true
	}
	br.index++
	br.plain = pt
	return nil
}

func (br *backupReader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("e2ee: backup ends inside chunk %d: %w", br.index, ErrTruncated)
	}
	return fmt.Errorf("e2ee: read backup chunk %d: %w", br.index, err)
}

// EncryptBackup encrypts plaintext into one backup stream, deriving the key
// from password with params and drawing salt and nonce prefix from rand.
func EncryptBackup(plaintext, password []byte, params BackupParams, rand io.Reader) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(BackupHeaderSize + len(plaintext) + (len(plaintext)/int(max(params.ChunkSize, 1))+1)*(backupFrameHeaderSize+backupTagSize))
	w, err := NewBackupWriter(&out, password, params, rand)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// DecryptBackup decrypts a whole backup stream. It returns the plaintext
// only if every chunk, the final one included, is authentic.
func DecryptBackup(backup, password []byte) ([]byte, error) {
	r, err := NewBackupReader(bytes.NewReader(backup), password)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(backup))
	buf := bytes.NewBuffer(out)
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func hkdfSHA256(secret, salt []byte, info string, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, salt, info, n)
	if err != nil {
		panic(err) // only for n > 255*32
	}
	return k
}

func randOrDefault(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}
