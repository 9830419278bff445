package client

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/wire"
)

// Backups (docs/protocol.md, "Backups"): the chat history, contacts and
// settings are written as an archive (backup_archive.go), compressed
// (Zstandard, RFC 8878), encrypted with a key derived from the backup password
// (e2ee backup stream: Argon2id with a random salt in the header), cut
// into BackupChunkSize chunks named by CID and uploaded to the storage
// nodes through the device's node; a manifest lists the chunks and a
// pointer signed by the device names the manifest.
const (
	// BackupChunkSize is the size of every chunk of a backup but the last.
	BackupChunkSize = 1 << 20
	// DefaultBackupParallel is the number of chunk transfers in flight.
	DefaultBackupParallel = 6
	// MinBackupPasswordLength is the shortest backup password accepted
	// for a new backup (in bytes).
	MinBackupPasswordLength = 12
	// BackupCompression is the Zstandard level: the fastest, since
	// compression is the slowest step of a backup (measured on chat-like
	// text: zstd's fastest level packs 1.6 times faster than DEFLATE's,
	// 8% smaller, and decompresses several times faster).
	BackupCompression = zstd.SpeedFastest
	// BackupSegmentSize is the archive bytes compressed into one
	// Zstandard frame. The frames are independent (each its own window),
	// so a backup compresses on every core; a segment is as large as the
	// fastest level's window, so little is lost to the cuts.
	BackupSegmentSize = 4 << 20
	// MaxBackupWindow bounds the Zstandard window a restore accepts (the
	// fastest level uses 4 MiB), and so the decoder's memory.
	MaxBackupWindow = 8 << 20
	// ChunkFetchAttempts bounds how often a chunk is fetched when the node
	// answers an error or bytes that do not match its CID.
	ChunkFetchAttempts = 3
	// ChunkRetryPause is the pause before fetching a chunk again.
	ChunkRetryPause = 200 * time.Millisecond
	// MaxStatusChunks bounds the chunks whose replicas BackupStatus asks
	// for; a larger backup is sampled evenly (first and last included).
	MaxStatusChunks = 32
	// backupSpoolPattern names the temporary file of a backup in the home.
	backupSpoolPattern = ".backup-*.tmp"
)

// Errors of backups; callers branch on them.
var (
	// ErrBackupPasswordTooShort: a new backup's password is shorter than
	// MinBackupPasswordLength.
	ErrBackupPasswordTooShort = fmt.Errorf("backup: the password must have at least %d characters", MinBackupPasswordLength)
	// ErrBackupWrongPassword: the password does not open the backup, or a
	// byte of it changed; nothing was imported.
	ErrBackupWrongPassword = errors.New("backup: wrong password or damaged backup (nothing imported)")
	// ErrBackupDamaged: a chunk of the backup could not be fetched intact
	// from the network; nothing was imported.
	ErrBackupDamaged = errors.New("backup: damaged backup (nothing imported)")
	// ErrBackupOverQuota: the storage nodes refused the backup for the
	// user's quota; no pointer was published.
	ErrBackupOverQuota = errors.New("backup: over quota")
	// ErrNoBackup: no backup pointer exists for the user.
	ErrNoBackup = errors.New("no backup found")
	// ErrBadBackupPointer: the node served a pointer that does not verify
	// or does not belong to this user's chain.
	ErrBadBackupPointer = errors.New("backup: the backup pointer does not verify")
)

// BackupPhase names a step of a backup or restore, for progress reports.
type BackupPhase int

// Backup phases.
const (
	// PhasePack: writing, compressing, encrypting and (when the quota is
	// ample) uploading the archive; Done and Total count messages.
	PhasePack BackupPhase = iota + 1
	// PhaseUpload: uploading chunks from the spool, after the exact
	// preflight of a backup whose upper bound did not fit the quota;
	// Done and Total count bytes.
	PhaseUpload
	// PhaseDownload: downloading, checking and decrypting chunks; bytes.
	PhaseDownload
)

func (p BackupPhase) String() string {
	switch p {
	case PhasePack:
		return "packing"
	case PhaseUpload:
		return "uploading"
	case PhaseDownload:
		return "downloading"
	}
	return fmt.Sprintf("BackupPhase(%d)", int(p))
}

// BackupProgress is one progress report.
type BackupProgress struct {
	Phase       BackupPhase
	Done, Total int64
}

// BackupOptions tune a backup or restore; the zero value is the default.
type BackupOptions struct {
	// KDF is the Argon2id cost of a new backup (e2ee.DefaultBackupParams
	// if zero). A restore reads the cost from the backup's header.
	KDF e2ee.BackupParams
	// Parallel is the number of chunk transfers in flight
	// (DefaultBackupParallel if 0).
	Parallel int
	// Progress, if not nil, is called as the work advances, from one
	// goroutine at a time.
	Progress func(BackupProgress)
}

func (o BackupOptions) parallel() int {
	if o.Parallel <= 0 {
		return DefaultBackupParallel
	}
	return o.Parallel
}

// progress serialises progress reports from several goroutines.
type progress struct {
	mu    sync.Mutex
	fn    func(BackupProgress)
	phase BackupPhase
	done  int64
	total int64
}

func newProgress(fn func(BackupProgress), phase BackupPhase, total int64) *progress {
	p := &progress{fn: fn, phase: phase, total: total}
	p.add(0)
	return p
}

func (p *progress) add(n int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.fn(BackupProgress{Phase: p.phase, Done: p.done, Total: p.total})
}

// BackupResult describes a finished backup.
type BackupResult struct {
	Pointer  wire.BackupPointer
	Chunks   int
	Messages int
	Contacts int
	// MinReplicas is the fewest storage nodes any chunk was stored on.
	MinReplicas int
}
