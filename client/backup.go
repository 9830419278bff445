package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
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

// Backup writes this device's history, contacts and settings into a new
// backup encrypted with password, uploads it and publishes the pointer.
//
// The node's quota is checked before anything is stored. First with an
// upper bound of the backup's size (the history uncompressed): when that
// fits, the archive is packed and uploaded in one pipeline, chunks going
// out as they are made. When it does not, the backup is packed into a
// spool file in the home (0600, ciphertext only, removed after) and
// checked again with its exact size, then uploaded from there. A refused
// backup leaves no pointer (ErrBackupOverQuota).
func (ch *Chat) Backup(ctx context.Context, password []byte, opts BackupOptions) (BackupResult, error) {
	if len(password) < MinBackupPasswordLength {
		return BackupResult{}, ErrBackupPasswordTooShort
	}
	kdf := opts.KDF
	if kdf == (e2ee.BackupParams{}) {
		kdf = e2ee.DefaultBackupParams()
	}
	if _, err := ch.chain(ctx, ch.self.User, 0); err != nil {
		return BackupResult{}, err
	}
	st, err := ch.c.home.State()
	if err != nil {
		return BackupResult{}, err
	}
	info, err := ch.c.api.NodeInfo(ctx)
	if err != nil {
		return BackupResult{}, err
	}

	peers, messages, bound := ch.backupBound(kdf)
	boundChunks := bound/BackupChunkSize + 1
	err = ch.preflight(ctx, info.PeerID, bound+manifestBound(boundChunks), boundChunks+1)
	if err != nil && !errors.Is(err, ErrBackupOverQuota) {
		return BackupResult{}, err
	}
	res := BackupResult{}
	var chunks []wire.ManifestChunk
	var minRep int
	if err == nil {
		chunks, minRep, err = ch.packStreamed(ctx, password, kdf, st, peers, messages, info.PeerID, &res, opts)
	} else {
		chunks, minRep, err = ch.packSpooled(ctx, password, kdf, st, peers, messages, info.PeerID, &res, opts)
	}
	if err != nil {
		return BackupResult{}, err
	}

	now := ch.c.now()
	m := wire.Manifest{User: ch.self.User, Created: now, Chunks: chunks}
	for _, c := range chunks {
		m.Size += uint64(c.Size)
	}
	menc, err := m.Encode()
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup: manifest: %w", err)
	}
	mcid := wire.ChunkCID(menc)
	auth := wire.SignUpload(ch.keys, ch.self.User, info.PeerID, mcid.String(), ch.c.now())
	n, err := ch.c.api.PutChunk(ctx, auth, mcid, menc, true)
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup: upload manifest: %w", explainQuota(err))
	}
	minRep = min(minRep, n)

	p := wire.BackupPointer{User: ch.self.User, Device: ch.self.Device, Manifest: mcid, Size: m.Size, Time: now}
	rec, err := wire.SignBackupPointer(p, ch.keys.Signing, st.Chain)
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup: sign pointer: %w", err)
	}
	enc, err := rec.Encode()
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup: pointer: %w", err)
	}
	if err := ch.c.api.PutPointer(ctx, enc); err != nil {
		return BackupResult{}, fmt.Errorf("backup: publish pointer: %w", err)
	}
	res.Pointer, res.Chunks, res.MinReplicas = rec.Pointer, len(chunks), minRep
	return res, nil
}

// backupBound returns the conversations, the number of messages and an
// upper bound of the encrypted backup's size: the archive uncompressed
// (each message's text and at most archiveMessageOverhead bytes), what
// Zstandard may add to incompressible data, and the e2ee framing.
func (ch *Chat) backupBound(kdf e2ee.BackupParams) ([]e2ee.UserID, int, uint64) {
	peers := ch.Conversations()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	a := uint64(archiveFixedOverhead)
	messages := 0
	for _, p := range peers {
		a += archiveContactOverhead
		for _, m := range ch.st.history[p] {
			a += uint64(len(m.Text)) + archiveMessageOverhead
		}
		messages += len(ch.st.history[p])
	}
	a += a / 1024 // a record's framing per archiveBatchBytes at most
	z := a + a/128 + 64<<10
	frame := uint64(max(kdf.ChunkSize, e2ee.MinBackupChunkSize))
	return peers, messages, z + (z/frame+1)*64 + uint64(e2ee.BackupHeaderSize)
}

// manifestBound bounds the encoded manifest of a backup of chunks chunks.
func manifestBound(chunks uint64) uint64 { return 128 + chunks*(wire.ChunkCIDSize+8) }

// preflight asks the node whether a backup of bytes in chunks fits the
// user's quota. When it does not, it asks again for nothing to learn the
// quota and what the user holds, for the error's message.
func (ch *Chat) preflight(ctx context.Context, peerID string, bytes, chunks uint64) error {
	auth := wire.SignUpload(ch.keys, ch.self.User, peerID, wire.CheckWhat(bytes, chunks), ch.c.now())
	_, err := ch.c.api.CheckBackup(ctx, auth, bytes, chunks)
	if !IsCode(err, CodeQuotaExceeded) {
		return err
	}
	auth = wire.SignUpload(ch.keys, ch.self.User, peerID, wire.CheckWhat(0, 0), ch.c.now())
	q, qerr := ch.c.api.CheckBackup(ctx, auth, 0, 0)
	if qerr != nil {
		return explainQuota(err)
	}
	return fmt.Errorf("%w: this node allows %d bytes in %d chunks for your user, which holds %d bytes in %d chunks there; this backup needs %d bytes in %d chunks (nothing was stored or published)",
		ErrBackupOverQuota, q.QuotaBytes, q.QuotaChunks, q.UsedBytes, q.UsedChunks, bytes, chunks)
}

// explainQuota turns a quota_exceeded answer into ErrBackupOverQuota.
func explainQuota(err error) error {
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == CodeQuotaExceeded {
		return fmt.Errorf("%w: %s (no pointer was published)", ErrBackupOverQuota, ae.Message)
	}
	return err
}

// pendingChunk is one chunk on its way to the node.
type pendingChunk struct {
	index int
	chunk wire.ManifestChunk
	data  []byte
}

// pack writes the archive (writeArchive) in BackupSegmentSize
// segments, compresses each into an independent Zstandard frame on
// several cores (pipelineWorkers), and writes the frames in order
// through the e2ee backup writer into chunks, handing each to emit. It
// returns the chunks.
func (ch *Chat) pack(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []e2ee.UserID, prog *progress, res *BackupResult, emit func(pendingChunk) error) ([]wire.ManifestChunk, error) {
	workers := pipelineWorkers()
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(BackupCompression), zstd.WithEncoderConcurrency(workers),
		zstd.WithWindowSize(BackupSegmentSize))
	if err != nil {
		return nil, fmt.Errorf("backup: compress: %w", err)
	}
	defer zw.Close()
	cw := &chunkWriter{emit: emit}
	bw, err := e2ee.NewBackupWriter(cw, password, kdf, ch.c.rand)
	if err != nil {
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	err = orderedPipeline(workers, func(emit func([]byte) error) error {
		sw := &segmentWriter{emit: emit}
		if err := ch.writeArchive(ctx, sw, peers, st, res, prog); err != nil {
			return err
		}
		return sw.flush()
	}, func(seg []byte) ([]byte, error) {
		return zw.EncodeAll(seg, make([]byte, 0, len(seg)/2)), nil
	}, func(frame []byte) error {
		_, err := bw.Write(frame)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := bw.Close(); err != nil {
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	if err := cw.flush(); err != nil {
		return nil, err
	}
	return cw.chunks, nil
}

// segmentWriter cuts what is written into BackupSegmentSize segments
// (each a buffer of its own) and hands each to emit.
type segmentWriter struct {
	emit func([]byte) error
	buf  []byte
}

func (sw *segmentWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if sw.buf == nil {
			sw.buf = make([]byte, 0, BackupSegmentSize)
		}
		c := min(len(p), BackupSegmentSize-len(sw.buf))
		sw.buf = append(sw.buf, p[:c]...)
		p = p[c:]
		if len(sw.buf) == BackupSegmentSize {
			if err := sw.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (sw *segmentWriter) flush() error {
	if len(sw.buf) == 0 {
		return nil
	}
	b := sw.buf
	sw.buf = nil
	return sw.emit(b)
}

// packStreamed packs and uploads at once: chunks go to the upload workers
// as they are made.
func (ch *Chat) packStreamed(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []e2ee.UserID, messages int, peerID string, res *BackupResult, opts BackupOptions) ([]wire.ManifestChunk, int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in := make(chan pendingChunk, opts.parallel())
	up := ch.startUploads(ctx, cancel, in, peerID, opts.parallel(), nil)
	chunks, err := ch.pack(ctx, password, kdf, st, peers, newProgress(opts.Progress, PhasePack, int64(messages)), res, func(c pendingChunk) error {
		select {
		case in <- c:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(in)
	minRep := up.wait()
	if cause := context.Cause(ctx); cause != nil {
		return nil, 0, cause
	}
	if err != nil {
		return nil, 0, err
	}
	return chunks, minRep, nil
}

// packSpooled packs into a spool file in the home, checks the quota with
// the exact size, and uploads from the spool.
func (ch *Chat) packSpooled(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []e2ee.UserID, messages int, peerID string, res *BackupResult, opts BackupOptions) ([]wire.ManifestChunk, int, error) {
	spool, err := os.CreateTemp(ch.c.home.Dir(), backupSpoolPattern)
	if err != nil {
		return nil, 0, fmt.Errorf("backup: spool: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	if err := spool.Chmod(HomeFileMode); err != nil {
		return nil, 0, fmt.Errorf("backup: spool: %w", err)
	}
	chunks, err := ch.pack(ctx, password, kdf, st, peers, newProgress(opts.Progress, PhasePack, int64(messages)), res, func(c pendingChunk) error {
		if _, err := spool.Write(c.data); err != nil {
			return fmt.Errorf("backup: spool: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var total uint64
	for _, c := range chunks {
		total += uint64(c.Size)
	}
	n := uint64(len(chunks))
	if err := ch.preflight(ctx, peerID, total+manifestBound(n), n+1); err != nil {
		return nil, 0, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in := make(chan pendingChunk, opts.parallel())
	up := ch.startUploads(ctx, cancel, in, peerID, opts.parallel(), newProgress(opts.Progress, PhaseUpload, int64(total)))
	var off int64
feed:
	for i, c := range chunks {
		b := make([]byte, c.Size)
		if _, err := spool.ReadAt(b, off); err != nil {
			cancel(fmt.Errorf("backup: spool: %w", err))
			break
		}
		off += int64(c.Size)
		select {
		case in <- pendingChunk{index: i, chunk: c, data: b}:
		case <-ctx.Done():
			break feed
		}
	}
	close(in)
	minRep := up.wait()
	if cause := context.Cause(ctx); cause != nil {
		return nil, 0, cause
	}
	return chunks, minRep, nil
}

// writeArchive writes the archive of this chat to w, uncompressed.
func (ch *Chat) writeArchive(ctx context.Context, w io.Writer, peers []e2ee.UserID, st State, res *BackupResult, prog *progress) error {
	aw, err := newArchiveWriter(w, ch.self.User, ch.self.Device, ch.c.now())
	if err != nil {
		return err
	}
	if st.Node != "" {
		if err := aw.setting(SettingNode, st.Node); err != nil {
			return err
		}
	}
	for _, p := range peers {
		if err := aw.contact(p); err != nil {
			return err
		}
	}
	for _, p := range peers {
		// One conversation at a time is copied (the messages' texts are
		// shared, not copied), so the chat keeps running meanwhile.
		ch.mu.Lock()
		h := append([]ChatMessage(nil), ch.st.history[p]...)
		ch.mu.Unlock()
		for i, m := range h {
			if err := aw.message(m); err != nil {
				return err
			}
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
				prog.add(1024)
			}
		}
		prog.add(int64(len(h) % 1024))
		res.Messages += len(h)
	}
	res.Contacts = len(peers)
	return aw.close()
}

// chunkWriter cuts what is written into BackupChunkSize chunks, hands
// each (a buffer of its own) to emit and keeps their CIDs and sizes.
type chunkWriter struct {
	emit   func(pendingChunk) error
	buf    []byte
	chunks []wire.ManifestChunk
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if cw.buf == nil {
			cw.buf = make([]byte, 0, BackupChunkSize)
		}
		c := min(len(p), BackupChunkSize-len(cw.buf))
		cw.buf = append(cw.buf, p[:c]...)
		p = p[c:]
		if len(cw.buf) == BackupChunkSize {
			if err := cw.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (cw *chunkWriter) flush() error {
	if len(cw.buf) == 0 {
		return nil
	}
	if len(cw.chunks) == wire.MaxManifestChunks {
		return fmt.Errorf("backup: more than %d chunks, the most a manifest lists", wire.MaxManifestChunks)
	}
	c := wire.ManifestChunk{CID: wire.ChunkCID(cw.buf), Size: uint32(len(cw.buf))}
	cw.chunks = append(cw.chunks, c)
	b := cw.buf
	cw.buf = nil
	return cw.emit(pendingChunk{index: len(cw.chunks) - 1, chunk: c, data: b})
}

// uploads is a set of upload workers.
type uploads struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	minRep int
}

// startUploads starts n workers that upload the chunks from in, each with
// its own signed authorization; the first failure cancels ctx with its
// cause. prog (if not nil) counts the bytes uploaded.
func (ch *Chat) startUploads(ctx context.Context, cancel context.CancelCauseFunc, in <-chan pendingChunk, peerID string, n int, prog *progress) *uploads {
	u := &uploads{minRep: int(^uint(0) >> 1)}
	for range n {
		u.wg.Go(func() {
			for c := range in {
				if ctx.Err() != nil {
					continue // drain
				}
				auth := wire.SignUpload(ch.keys, ch.self.User, peerID, c.chunk.CID.String(), ch.c.now())
				r, err := ch.c.api.PutChunk(ctx, auth, c.chunk.CID, c.data, false)
				if err != nil {
					cancel(fmt.Errorf("backup: upload chunk %d: %w", c.index+1, explainQuota(err)))
					continue
				}
				u.mu.Lock()
				u.minRep = min(u.minRep, r)
				u.mu.Unlock()
				if prog != nil {
					prog.add(int64(c.chunk.Size))
				}
			}
		})
	}
	return u
}

// wait waits for the workers and returns the fewest replicas a chunk got.
func (u *uploads) wait() int {
	u.wg.Wait()
	return u.minRep
}

// ownPointer fetches and verifies this user's backup pointer: the record
// verifies from its own chain, names this user, and that chain is a
// prefix of (or the same as, or extends) this device's verified chain,
// fetched now and checked against the saved one; the signing device is a
// current device of the newer of the two.
func (c *Client) ownPointer(ctx context.Context) (wire.PointerRecord, error) {
	st, err := c.home.State()
	if err != nil {
		return wire.PointerRecord{}, err
	}
	id, err := identityOf(st)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	set, links, err := c.fetchChain(ctx, c.api, id.User)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	if _, err := c.acceptOwnChain(st, set, links); err != nil {
		return wire.PointerRecord{}, err
	}
	raw, err := c.api.Pointer(ctx, id.User)
	if IsCode(err, CodeNotFound) {
		return wire.PointerRecord{}, fmt.Errorf("%w for user %s", ErrNoBackup, id.User)
	}
	if err != nil {
		return wire.PointerRecord{}, err
	}
	rec, err := wire.DecodePointerRecord(raw)
	if err != nil {
		return wire.PointerRecord{}, fmt.Errorf("%w: %w", ErrBadBackupPointer, err)
	}
	if !rec.Pointer.User.Equal(id.User) {
		return wire.PointerRecord{}, fmt.Errorf("%w: the node served the pointer of %s for %s", ErrBadBackupPointer, rec.Pointer.User, id.User)
	}
	recSet, err := rec.VerifyDevices()
	if err != nil {
		return wire.PointerRecord{}, fmt.Errorf("%w: %w", ErrBadBackupPointer, err)
	}
	switch r := e2ee.Relate(set, recSet); r {
	case e2ee.ChainSame, e2ee.ChainRollback:
		if _, ok := set.Lookup(rec.Pointer.Device); !ok {
			return wire.PointerRecord{}, fmt.Errorf("%w: signed by %s, which is no longer a device of %s", ErrBadBackupPointer, rec.Pointer.Device, id.User)
		}
	case e2ee.ChainExtends:
		// Signed with a chain newer than the node's: VerifyDevices checked it.
	default:
		return wire.PointerRecord{}, fmt.Errorf("%w: its chain is %s from this device's", ErrBadBackupPointer, r)
	}
	return rec, nil
}

// fetchManifest downloads, checks and decodes the manifest rec names.
func (c *Client) fetchManifest(ctx context.Context, rec wire.PointerRecord) (wire.Manifest, error) {
	b, err := c.fetchChunk(ctx, rec.Pointer.Manifest)
	if err != nil {
		return wire.Manifest{}, fmt.Errorf("%w: manifest %s: %w", ErrBackupDamaged, rec.Pointer.Manifest, err)
	}
	m, err := wire.DecodeManifest(b)
	if err != nil {
		return wire.Manifest{}, fmt.Errorf("%w: manifest %s: %w", ErrBackupDamaged, rec.Pointer.Manifest, err)
	}
	if !m.User.Equal(rec.Pointer.User) || m.Size != rec.Pointer.Size {
		return wire.Manifest{}, fmt.Errorf("%w: manifest of %s with %d bytes, the pointer names %s with %d", ErrBackupDamaged, m.User, m.Size, rec.Pointer.User, rec.Pointer.Size)
	}
	return m, nil
}

// fetchChunk gets chunk id from the node, checked against its CID, trying
// again (the node then asks other holders) up to ChunkFetchAttempts times.
func (c *Client) fetchChunk(ctx context.Context, id cid.Cid) ([]byte, error) {
	var err error
	for attempt := range ChunkFetchAttempts {
		if attempt > 0 {
			if serr := sleep(ctx, ChunkRetryPause); serr != nil {
				return nil, errors.Join(err, serr)
			}
		}
		var b []byte
		if b, err = c.api.GetChunk(ctx, id); err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Pointer wire.BackupPointer
	// Messages is the number of messages in the backup; Imported the
	// number that were new to this device.
	Messages int
	Imported int
	Contacts int
}

// Restore finds this user's newest backup, downloads every chunk (each
// checked against its CID), decrypts it with password, decompresses and
// decodes the whole archive, and only then imports it into the chat store
// (see importArchive). A wrong password or a changed byte anywhere gives
// ErrBackupWrongPassword, a chunk no node serves intact ErrBackupDamaged;
// either way nothing is imported.
func (ch *Chat) Restore(ctx context.Context, password []byte, opts BackupOptions) (RestoreResult, error) {
	rec, err := ch.c.ownPointer(ctx)
	if err != nil {
		return RestoreResult{}, err
	}
	m, err := ch.c.fetchManifest(ctx, rec)
	if err != nil {
		return RestoreResult{}, err
	}
	a, err := ch.c.download(ctx, m, password, opts)
	if err != nil {
		return RestoreResult{}, err
	}
	if !a.User.Equal(ch.self.User) {
		return RestoreResult{}, fmt.Errorf("%w: the archive is of user %s", ErrBackupDamaged, a.User)
	}
	n, err := ch.importArchive(a)
	if err != nil {
		return RestoreResult{}, err
	}
	return RestoreResult{Pointer: rec.Pointer, Messages: a.Messages, Imported: n, Contacts: len(a.Contacts)}, nil
}

// download fetches the chunks of m in order (opts.parallel() in flight)
// into the decryption and decompression pipeline and decodes the archive.
func (c *Client) download(ctx context.Context, m wire.Manifest, password []byte, opts BackupOptions) (*Archive, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	prog := newProgress(opts.Progress, PhaseDownload, int64(m.Size))
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(c.fetchInOrder(ctx, m, pw, opts.parallel(), prog))
	}()
	defer func() { pr.CloseWithError(errors.New("restore: stopped")); <-done }()

	a, err := decodeBackup(pr, password)
	if err != nil {
		var fetchErr *chunkFetchError
		switch {
		case errors.As(err, &fetchErr):
			return nil, fmt.Errorf("%w: %w", ErrBackupDamaged, fetchErr.err)
		case ctx.Err() != nil && context.Cause(ctx) != nil:
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	return a, nil
}

// decodeBackup decrypts, decompresses and decodes a whole backup stream;
// the e2ee reader authenticates every byte up to the final chunk. Any
// failure of the password or the bytes is ErrBackupWrongPassword.
func decodeBackup(r io.Reader, password []byte) (*Archive, error) {
	rd, err := e2ee.NewBackupReader(r, password)
	if err != nil {
		return nil, backupStreamError(err)
	}
	zr, err := zstd.NewReader(bufio.NewReaderSize(rd, 256<<10), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxBackupWindow), zstd.WithDecoderMaxMemory(MaxArchiveRecordSize+MaxBackupWindow))
	if err != nil {
		return nil, backupStreamError(err)
	}
	defer zr.Close()
	a, err := ReadArchive(zr)
	if err != nil {
		return nil, backupStreamError(err)
	}
	// The decoder reads to the end of rd (the final chunk authenticated):
	// anything after the archive's end record, compressed or not, is an
	// error.
	if n, err := io.Copy(io.Discard, zr); err != nil || n != 0 {
		return nil, backupStreamError(fmt.Errorf("%d bytes after the archive: %w", n, err))
	}
	return a, nil
}

// backupStreamError classifies an error of reading a backup stream.
func backupStreamError(err error) error {
	var fetchErr *chunkFetchError
	if errors.As(err, &fetchErr) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrBackupWrongPassword, err)
}

// chunkFetchError is a chunk that could not be fetched intact; it goes
// through the pipe to the decoder.
type chunkFetchError struct{ err error }

func (e *chunkFetchError) Error() string { return e.err.Error() }
func (e *chunkFetchError) Unwrap() error { return e.err }

// fetchInOrder fetches m's chunks, parallel at a time, and writes them to
// w in order.
func (c *Client) fetchInOrder(ctx context.Context, m wire.Manifest, w io.Writer, parallel int, prog *progress) error {
	type result struct {
		b   []byte
		err error
	}
	slots := make(chan chan result, parallel)
	go func() {
		defer close(slots)
		for i, ch := range m.Chunks {
			r := make(chan result, 1)
			select {
			case slots <- r:
			case <-ctx.Done():
				return
			}
			go func() {
				b, err := c.fetchChunk(ctx, ch.CID)
				if err == nil && len(b) != int(ch.Size) {
					err = fmt.Errorf("%d bytes, the manifest says %d", len(b), ch.Size)
				}
				if err != nil {
					err = &chunkFetchError{fmt.Errorf("chunk %d of %d (%s): %w", i+1, len(m.Chunks), ch.CID, err)}
				}
				r <- result{b, err}
			}()
		}
	}()
	for r := range slots {
		var res result
		select {
		case res = <-r:
		case <-ctx.Done():
			return ctx.Err()
		}
		if res.err != nil {
			return res.err
		}
		if _, err := w.Write(res.b); err != nil {
			return err
		}
		prog.add(int64(len(res.b)))
	}
	return ctx.Err()
}

// BackupStatus describes the newest backup of this user.
type BackupStatus struct {
	Pointer wire.BackupPointer
	Chunks  int
	// ManifestReplicas is the number of storage nodes holding the manifest.
	ManifestReplicas int
	// Checked lists the chunks whose replicas were asked for: all of them,
	// or an even sample of MaxStatusChunks when Sampled.
	Checked []ChunkStatus
	Sampled bool
	// MinReplicas is the fewest replicas among the manifest and the
	// checked chunks.
	MinReplicas int
}

// ChunkStatus is the replicas of one chunk.
type ChunkStatus struct {
	Index    int
	CID      cid.Cid
	Size     uint32
	Replicas int
	Holders  []string
}

// BackupStatus verifies this user's backup pointer, fetches the manifest
// and asks the node how many storage nodes hold it and each chunk (a
// sample of MaxStatusChunks for larger backups). It needs no password.
func (c *Client) BackupStatus(ctx context.Context) (BackupStatus, error) {
	rec, err := c.ownPointer(ctx)
	if err != nil {
		return BackupStatus{}, err
	}
	m, err := c.fetchManifest(ctx, rec)
	if err != nil {
		return BackupStatus{}, err
	}
	s := BackupStatus{Pointer: rec.Pointer, Chunks: len(m.Chunks)}
	r, err := c.api.Replicas(ctx, rec.Pointer.Manifest)
	if err != nil {
		return BackupStatus{}, err
	}
	s.ManifestReplicas, s.MinReplicas = r.Replicas, r.Replicas
	idx := sampleIndexes(len(m.Chunks), MaxStatusChunks)
	s.Sampled = len(idx) < len(m.Chunks)
	for _, i := range idx {
		ch := m.Chunks[i]
		r, err := c.api.Replicas(ctx, ch.CID)
		if err != nil {
			return BackupStatus{}, err
		}
		s.Checked = append(s.Checked, ChunkStatus{Index: i, CID: ch.CID, Size: ch.Size, Replicas: r.Replicas, Holders: r.Holders})
		s.MinReplicas = min(s.MinReplicas, r.Replicas)
	}
	return s, nil
}

// sampleIndexes returns every index below n, or k of them spread evenly
// (the first and the last included) when n > k.
func sampleIndexes(n, k int) []int {
	if n <= k {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, k)
	for j := range out {
		out[j] = j * (n - 1) / (k - 1)
	}
	return out
}
