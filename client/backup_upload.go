package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

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
func (ch *Chat) backupBound(kdf e2ee.BackupParams) ([]ident.UserID, int, uint64) {
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
func (ch *Chat) pack(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []ident.UserID, prog *progress, res *BackupResult, emit func(pendingChunk) error) ([]wire.ManifestChunk, error) {
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
func (ch *Chat) packStreamed(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []ident.UserID, messages int, peerID string, res *BackupResult, opts BackupOptions) ([]wire.ManifestChunk, int, error) {
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
func (ch *Chat) packSpooled(ctx context.Context, password []byte, kdf e2ee.BackupParams, st State, peers []ident.UserID, messages int, peerID string, res *BackupResult, opts BackupOptions) ([]wire.ManifestChunk, int, error) {
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
func (ch *Chat) writeArchive(ctx context.Context, w io.Writer, peers []ident.UserID, st State, res *BackupResult, prog *progress) error {
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
