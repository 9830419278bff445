package backupstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// verifyAuth checks a against the user's current chain: the signature
// over (a.Entry, what) and, when window is set, the time. Repair forwards
// an authorization made long ago, so it is checked without the window.
func (s *Service) verifyAuth(ctx context.Context, a authorization, what string, window bool) error {
	devices, err := s.users.Devices(ctx, a.User)
	if err != nil {
		s.met.refusals.WithLabelValues("auth").Inc()
		return fmt.Errorf("%w: user %s: %w", ErrUnauthenticated, a.User, err)
	}
	now := s.now()
	if !window {
		now = a.Time
	}
	if err := a.Verify(a.Entry, what, devices, now); err != nil {
		s.met.refusals.WithLabelValues("auth").Inc()
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return nil
}

// checkChunk checks data against c and, for a manifest, that it decodes
// and is the uploading user's.
func (s *Service) checkChunk(c cid.Cid, data []byte, kind uint8, user ident.UserID) error {
	if err := wire.CheckChunk(c, data); err != nil {
		s.met.refusals.WithLabelValues("bad_chunk").Inc()
		return err
	}
	if kind == kindManifest {
		m, err := wire.DecodeManifest(data)
		if err != nil {
			s.met.refusals.WithLabelValues("bad_chunk").Inc()
			return fmt.Errorf("%w: manifest: %w", wire.ErrBadChunk, err)
		}
		if !m.User.Equal(user) {
			s.met.refusals.WithLabelValues("bad_chunk").Inc()
			return fmt.Errorf("%w: manifest of %s uploaded by %s", wire.ErrBadChunk, m.User, user)
		}
	}
	return nil
}

// storeLocal checks and stores one chunk on this node. window: whether the
// authorization must be recent (an upload) or may be old (a repair's
// replicate, bounded by checkReplicate).
func (s *Service) storeLocal(ctx context.Context, c cid.Cid, data []byte, kind uint8, a authorization, window bool) (bool, error) {
	if !s.cfg.Enabled {
		return false, ErrNotStorage
	}
	if err := s.checkChunk(c, data, kind, a.User); err != nil {
		return false, err
	}
	if err := s.verifyAuth(ctx, a, c.String(), window); err != nil {
		return false, err
	}
	if !window {
		if err := s.checkReplicate(ctx, a, c); err != nil {
			s.met.refusals.WithLabelValues("auth").Inc()
			return false, err
		}
	}
	return s.storeChecked(ctx, c, data, kind, a)
}

// storeChecked stores one chunk on this node whose CID, kind and
// authorization have been checked on this node.
func (s *Service) storeChecked(ctx context.Context, c cid.Cid, data []byte, kind uint8, a authorization) (bool, error) {
	if !s.cfg.Enabled {
		return false, ErrNotStorage
	}
	isNew, err := s.cs.put(ctx, c, data, chunkMeta{
		Owner: a.User, Size: uint64(len(data)), Stored: s.now().UnixMilli(), Kind: kind,
		Device: a.Device, Time: a.Time.Unix(), Sig: a.Signature, Entry: a.Entry,
	})
	if errors.Is(err, ErrQuotaExceeded) {
		s.met.refusals.WithLabelValues("quota").Inc()
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("backupstore: store chunk %s: %w", c, err)
	}
	if isNew {
		s.met.stored.Inc()
		s.met.bytes.Add(float64(len(data)))
		select {
		case s.provide <- c:
		default:
		}
	}
	return isNew, nil
}

// Quota is the answer to a preflight check: this node's quotas and what
// the user holds on it.
type Quota struct {
	QuotaBytes  uint64 `json:"quota_bytes"`
	QuotaChunks uint64 `json:"quota_chunks"`
	Usage
}

// Check is the preflight of a backup of bytes bytes in chunks chunks,
// authorized by the device for this node (what = wire.CheckWhat). It fails
// with ErrQuotaExceeded when the backup can never fit: each storage node
// may have to hold every chunk of it (in networks of at most Replicas
// storage nodes it does), so the backup alone must fit the quota, and on
// top of what the user holds on this node.
func (s *Service) Check(ctx context.Context, auth wire.UploadAuth, bytes, chunks uint64) (Quota, error) {
	a := authorization{UploadAuth: auth, Entry: s.host.ID().String()}
	if err := s.verifyAuth(ctx, a, wire.CheckWhat(bytes, chunks), true); err != nil {
		return Quota{}, err
	}
	u, err := s.cs.usage(auth.User)
	if err != nil {
		return Quota{}, fmt.Errorf("backupstore: usage of %s: %w", auth.User, err)
	}
	q := Quota{QuotaBytes: s.cfg.QuotaBytes, QuotaChunks: s.cfg.QuotaChunks, Usage: u}
	if bytes > q.QuotaBytes-min(q.QuotaBytes, u.Bytes) || chunks > q.QuotaChunks-min(q.QuotaChunks, u.Chunks) {
		s.met.refusals.WithLabelValues("quota").Inc()
		return q, fmt.Errorf("%w: a backup of %d bytes in %d chunks does not fit: each storage node allows %d bytes in %d chunks per user, and %s holds %d bytes in %d chunks on this one",
			ErrQuotaExceeded, bytes, chunks, q.QuotaBytes, q.QuotaChunks, auth.User, u.Bytes, u.Chunks)
	}
	return q, nil
}

// Usage returns what user holds on this node.
func (s *Service) Usage(user ident.UserID) (Usage, error) { return s.cs.usage(user) }

// Has reports whether this node holds c.
func (s *Service) Has(c cid.Cid) (bool, error) { return s.cs.has(c) }

// Put stores one chunk of auth's user on the storage nodes closest to c,
// each of which checks the chunk, the authorization (signed by the device
// for this node, what = c's text form) and the quota itself, and returns
// once the write quorum has it on disk, with the number of copies stored.
// A manifest (manifest set) must decode and name the user. When the quorum
// fails because of the quota, the copies made are released again.
func (s *Service) Put(ctx context.Context, c cid.Cid, data []byte, manifest bool, auth wire.UploadAuth) (int, error) {
	if s.ctx.Err() != nil {
		return 0, ErrStopped
	}
	kind := kindChunk
	if manifest {
		kind = kindManifest
	}
	a := authorization{UploadAuth: auth, Entry: s.host.ID().String()}
	// The holders are looked up while the chunk and the authorization
	// are checked; nothing is sent before both checks pass.
	var peers []peer.ID
	var lookupErr error
	lookupCtx, cancelLookup := context.WithCancel(ctx)
	defer cancelLookup()
	lookup := make(chan struct{})
	go func() {
		defer close(lookup)
		peers, lookupErr = s.Holders(lookupCtx, c)
	}()
	err := s.checkChunk(c, data, kind, a.User)
	if err == nil {
		err = s.verifyAuth(ctx, a, c.String(), true)
	}
	if err != nil {
		cancelLookup()
		<-lookup
		return 0, err
	}
	<-lookup
	if lookupErr != nil {
		return 0, lookupErr
	}
	quorum := min(s.cfg.WriteQuorum, len(peers))
	type result struct {
		p     peer.ID
		isNew bool
		err   error
	}
	done := make(chan result, len(peers))
	bg := context.WithoutCancel(ctx)
	for _, p := range peers {
		go func() {
			var r result
			r.p = p
			if p == s.host.ID() {
				// Checked above: this node's copy is not hashed and
				// verified twice.
				r.isNew, r.err = s.storeChecked(bg, c, data, kind, a)
			} else {
				r.isNew, r.err = s.storeRemote(bg, p, msgStore, c, data, kind, a)
			}
			done <- r
		}()
	}
	stored, failed := 0, 0
	var results []result
	for stored < quorum && failed <= len(peers)-quorum {
		var r result
		select {
		case r = <-done:
		case <-ctx.Done():
			return stored, ctx.Err()
		}
		results = append(results, r)
		if r.err == nil {
			stored++
		} else {
			failed++
			s.log.Debug("store chunk on storage node failed", "node", r.p.String(), "cid", c.String(), "err", r.err)
		}
	}
	if stored >= quorum {
		return stored, nil
	}
	// Failed: wait for the rest, so that what was stored can be released.
	for len(results) < len(peers) {
		results = append(results, <-done)
	}
	var errs []error
	quota, badChunk, unauth := false, false, false
	for _, r := range results {
		switch {
		case r.err == nil:
			continue
		case errors.Is(r.err, ErrQuotaExceeded):
			quota = true
		case errors.Is(r.err, wire.ErrBadChunk):
			badChunk = true
		case errors.Is(r.err, ErrUnauthenticated):
			unauth = true
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.p, r.err))
	}
	if quota {
		for _, r := range results {
			if r.err == nil && r.isNew {
				s.release(bg, r.p, c, a)
			}
		}
	}
	cause := errors.Join(errs...)
	switch {
	case quota:
		return 0, fmt.Errorf("%w: chunk %s: %w", ErrQuotaExceeded, c, cause)
	case badChunk:
		return 0, fmt.Errorf("%w: chunk %s: %w", wire.ErrBadChunk, c, cause)
	case unauth:
		return 0, fmt.Errorf("%w: chunk %s: %w", ErrUnauthenticated, c, cause)
	}
	return stored, fmt.Errorf("%w: %d of %d storage nodes stored chunk %s: %w", ErrNoQuorum, stored, quorum, c, cause)
}

// release takes back a copy stored by an upload whose quorum failed.
func (s *Service) release(ctx context.Context, p peer.ID, c cid.Cid, a authorization) {
	var err error
	if p == s.host.ID() {
		_, err = s.cs.remove(ctx, c, a.User)
	} else {
		h := header{Type: msgRelease, CID: c.Bytes()}
		a.put(&h)
		_, _, err = s.roundTrip(ctx, p, h, nil, msgOK)
	}
	if err != nil {
		s.log.Warn("release of a chunk whose upload failed", "node", p.String(), "cid", c.String(), "err", err)
	}
}

func (s *Service) storeRemote(ctx context.Context, p peer.ID, typ uint8, c cid.Cid, data []byte, kind uint8, a authorization) (bool, error) {
	h := header{Type: typ, CID: c.Bytes(), Kind: kind}
	a.put(&h)
	r, _, err := s.roundTrip(ctx, p, h, data, msgOK)
	if err != nil {
		return false, err
	}
	return r.New, nil
}
