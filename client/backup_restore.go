package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/compress/zstd"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

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
	switch r := ident.Relate(set, recSet); r {
	case ident.ChainSame, ident.ChainRollback:
		if _, ok := set.Lookup(rec.Pointer.Device); !ok {
			return wire.PointerRecord{}, fmt.Errorf("%w: signed by %s, which is no longer a device of %s", ErrBadBackupPointer, rec.Pointer.Device, id.User)
		}
	case ident.ChainExtends:
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
