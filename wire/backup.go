package wire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// Backup limits.
const (
	// MaxChunkSize bounds one backup chunk (the client cuts 1 MiB chunks).
	MaxChunkSize = 4 << 20
	// MaxManifestChunks bounds the chunks one manifest lists.
	MaxManifestChunks = 1 << 16
	// BackupTimeSkew is the clock difference allowed between a device's
	// upload authorization and the node checking it.
	BackupTimeSkew = 5 * time.Minute
	// PointerTimeSkew is how far past the checking node's clock a backup
	// pointer may be dated: a pointer dated later does not count (it
	// would otherwise stay the newest until its date).
	PointerTimeSkew = 5 * time.Minute
	// ManifestVersion is the version of the manifest format.
	ManifestVersion = 1
	// ChunkCIDSize is the binary size of a chunk CID.
	ChunkCIDSize = 4 + sha256.Size
	// MaxManifestSize bounds an encoded manifest: it is stored as a chunk.
	MaxManifestSize = MaxChunkSize
	// MaxPointerRecordSize bounds an encoded PointerRecord: the pointer,
	// the signature and a user chain of the largest size.
	MaxPointerRecordSize = 256 + ident.MaxChainLinks*(3+ident.MaxLinkSize)
	// maxUnixMilli bounds times on the wire to what a float64 holds exactly.
	maxUnixMilli = 1 << 53
)

// DomainBackupUpload is the signature domain of a device's upload
// authorization (BackupUploadMessage). Backup pointers are signed in
// ident.DomainBackup.
const DomainBackupUpload = "volo/v1/backup-upload"

// PointerNamespace is the DHT namespace of backup pointers: the pointer of
// user U is stored under "/volo-backup/" + U.String().
const PointerNamespace = "volo-backup"

// Errors of backups; callers branch on them.
var (
	// ErrBadChunk reports a chunk whose bytes do not match its CID, a CID
	// that is not CIDv1 raw sha2-256, or a chunk over MaxChunkSize.
	ErrBadChunk = errors.New("wire: bad backup chunk")
	// ErrBadManifest reports a manifest that does not decode or breaks a limit.
	ErrBadManifest = errors.New("wire: bad backup manifest")
	// ErrBadPointer reports a pointer record that does not decode or verify.
	ErrBadPointer = errors.New("wire: bad backup pointer")
	// ErrUploadAuth reports an upload authorization that does not verify.
	ErrUploadAuth = errors.New("wire: bad backup upload authorization")
)

// chunkCIDPrefix is the binary prefix of every chunk CID: version 1, codec
// raw (0x55), multihash sha2-256 (0x12) of 32 bytes (0x20).
var chunkCIDPrefix = [4]byte{0x01, 0x55, 0x12, 0x20}

var (
	manifestDecMode = StrictDecMode(MaxManifestChunks)
	pointerDecMode  = StrictDecMode(ident.MaxChainLinks)
)

// ChunkCID is the CID (v1, raw, sha2-256) of b.
func ChunkCID(b []byte) cid.Cid {
	d := sha256.Sum256(b)
	m, err := mh.Encode(d[:], mh.SHA2_256)
	if err != nil {
		panic(err) // a 32-byte sha2-256 digest always encodes
	}
	return cid.NewCidV1(cid.Raw, m)
}

// CheckChunk reports whether b is a chunk within MaxChunkSize whose CID is c.
func CheckChunk(c cid.Cid, b []byte) error {
	if err := CheckChunkCID(c); err != nil {
		return err
	}
	if len(b) == 0 || len(b) > MaxChunkSize {
		return fmt.Errorf("%w: %s: %d bytes (1 to %d)", ErrBadChunk, c, len(b), MaxChunkSize)
	}
	if got := ChunkCID(b); !got.Equals(c) {
		return fmt.Errorf("%w: content hashes to %s, not %s", ErrBadChunk, got, c)
	}
	return nil
}

// CheckChunkCID reports whether c is a CIDv1 with the raw codec and a
// sha2-256 multihash, the only kind of chunk CID.
func CheckChunkCID(c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("%w: undefined CID", ErrBadChunk)
	}
	b := c.Bytes()
	if len(b) != ChunkCIDSize || !bytes.Equal(b[:4], chunkCIDPrefix[:]) {
		return fmt.Errorf("%w: %s is not CIDv1 raw sha2-256", ErrBadChunk, c)
	}
	return nil
}

// ChunkCIDFromBytes parses the binary form of a chunk CID.
func ChunkCIDFromBytes(b []byte) (cid.Cid, error) {
	if len(b) != ChunkCIDSize || !bytes.Equal(b[:4], chunkCIDPrefix[:]) {
		return cid.Undef, fmt.Errorf("%w: %d bytes are not a CIDv1 raw sha2-256", ErrBadChunk, len(b))
	}
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", ErrBadChunk, err)
	}
	return c, nil
}

// ParseChunkCID parses the text form of a chunk CID: base32 lower case
// ("b" + 58 characters), the one spelling c.String() gives.
func ParseChunkCID(s string) (cid.Cid, error) {
	if len(s) != 59 || s[0] != 'b' {
		return cid.Undef, fmt.Errorf("%w: %q is not a base32 CIDv1", ErrBadChunk, s)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %q: %v", ErrBadChunk, s, err)
	}
	if err := CheckChunkCID(c); err != nil {
		return cid.Undef, err
	}
	if c.String() != s {
		return cid.Undef, fmt.Errorf("%w: %q is not in canonical lower-case base32", ErrBadChunk, s)
	}
	return c, nil
}

// Manifest lists a backup's chunks in order. It is itself uploaded as a
// chunk (kind manifest) and named by its CID. It holds no plaintext: the
// chunks are one e2ee backup stream (header with the KDF salt first) cut
// in pieces.
type Manifest struct {
	User    ident.UserID
	Created time.Time // encoded as unix milliseconds
	Size    uint64    // sum of chunk sizes
	Chunks  []ManifestChunk
}

// ManifestChunk is one chunk of a backup: its CID and size in bytes.
type ManifestChunk struct {
	CID  cid.Cid
	Size uint32
}

// wireManifest is the CBOR form: {1: version, 2: user, 3: created ms,
// 4: size, 5: [+ [cid bytes, size]]}.
type wireManifest struct {
	Version uint64              `cbor:"1,keyasint"`
	User    ident.UserID        `cbor:"2,keyasint"`
	Created uint64              `cbor:"3,keyasint"`
	Size    uint64              `cbor:"4,keyasint"`
	Chunks  []wireManifestChunk `cbor:"5,keyasint"`
}

type wireManifestChunk struct {
	_    struct{} `cbor:",toarray"`
	CID  []byte
	Size uint32
}

// Check reports whether m is within the limits: a user, a creation time,
// 1 to MaxManifestChunks chunks each of 1 to MaxChunkSize bytes with a
// chunk CID, and Size equal to their sum.
func (m Manifest) Check() error {
	switch {
	case m.User.IsZero():
		return fmt.Errorf("%w: no user", ErrBadManifest)
	case m.Created.UnixMilli() <= 0 || m.Created.UnixMilli() > maxUnixMilli:
		return fmt.Errorf("%w: creation time %s out of range", ErrBadManifest, m.Created)
	case len(m.Chunks) == 0 || len(m.Chunks) > MaxManifestChunks:
		return fmt.Errorf("%w: %d chunks (1 to %d)", ErrBadManifest, len(m.Chunks), MaxManifestChunks)
	}
	var sum uint64
	for i, c := range m.Chunks {
		if err := CheckChunkCID(c.CID); err != nil {
			return fmt.Errorf("%w: chunk %d: %w", ErrBadManifest, i, err)
		}
		if c.Size == 0 || c.Size > MaxChunkSize {
			return fmt.Errorf("%w: chunk %d of %d bytes (1 to %d)", ErrBadManifest, i, c.Size, MaxChunkSize)
		}
		sum += uint64(c.Size)
	}
	if sum != m.Size {
		return fmt.Errorf("%w: size %d, chunks add up to %d", ErrBadManifest, m.Size, sum)
	}
	return nil
}

// Encode returns the manifest's canonical CBOR encoding (version 1).
func (m Manifest) Encode() ([]byte, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	w := wireManifest{
		Version: ManifestVersion,
		User:    m.User,
		Created: uint64(m.Created.UnixMilli()),
		Size:    m.Size,
		Chunks:  make([]wireManifestChunk, len(m.Chunks)),
	}
	for i, c := range m.Chunks {
		w.Chunks[i] = wireManifestChunk{CID: c.CID.Bytes(), Size: c.Size}
	}
	b, err := encMode.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrBadManifest, err)
	}
	return b, nil
}

// DecodeManifest decodes and checks a manifest. Only the canonical
// encoding of a version 1 manifest within the limits is accepted.
func DecodeManifest(b []byte) (Manifest, error) {
	if len(b) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadManifest, len(b), MaxManifestSize)
	}
	var w wireManifest
	if err := manifestDecMode.Unmarshal(b, &w); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if w.Version != ManifestVersion {
		return Manifest{}, fmt.Errorf("%w: version %d, want %d", ErrBadManifest, w.Version, ManifestVersion)
	}
	if w.Created > maxUnixMilli {
		return Manifest{}, fmt.Errorf("%w: creation time out of range", ErrBadManifest)
	}
	m := Manifest{
		User:    w.User,
		Created: time.UnixMilli(int64(w.Created)).UTC(),
		Size:    w.Size,
		Chunks:  make([]ManifestChunk, len(w.Chunks)),
	}
	for i, c := range w.Chunks {
		id, err := ChunkCIDFromBytes(c.CID)
		if err != nil {
			return Manifest{}, fmt.Errorf("%w: chunk %d: %w", ErrBadManifest, i, err)
		}
		m.Chunks[i] = ManifestChunk{CID: id, Size: c.Size}
	}
	again, err := m.Encode()
	if err != nil {
		return Manifest{}, err
	}
	if !bytes.Equal(again, b) {
		return Manifest{}, fmt.Errorf("%w: not canonical CBOR", ErrBadManifest)
	}
	return m, nil
}

// BackupPointer names a user's newest backup: the CID of its manifest, the
// backup's size and when it was made. It is signed by one of the user's
// devices (ident.DomainBackup).
type BackupPointer struct {
	User     ident.UserID
	Device   ident.DeviceID
	Manifest cid.Cid
	Size     uint64
	Time     time.Time // unix milliseconds
}

// After reports whether p replaces o: a later time, or the same time and a
// smaller manifest CID (so every node picks the same one of two).
func (p BackupPointer) After(o BackupPointer) bool {
	if a, b := p.Time.UnixMilli(), o.Time.UnixMilli(); a != b {
		return a > b
	}
	return bytes.Compare(p.Manifest.Bytes(), o.Manifest.Bytes()) < 0
}

// CheckTime reports whether p is dated at most PointerTimeSkew after now:
// a pointer dated further in the future does not count.
func (p BackupPointer) CheckTime(now time.Time) error {
	if p.Time.After(now.Add(PointerTimeSkew)) {
		return fmt.Errorf("%w: dated %s, more than %s after %s", ErrBadPointer,
			p.Time.UTC().Format(time.RFC3339), PointerTimeSkew, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// PointerKey is the DHT key of user's backup pointer.
func PointerKey(user ident.UserID) string { return "/" + PointerNamespace + "/" + user.String() }

// PointerRecord is the value of the DHT record under PointerKey: the signed
// pointer plus the user's chain (encoded links, genesis first) so any node
// verifies it with no lookup.
type PointerRecord struct {
	Pointer   BackupPointer
	Signature []byte
	Chain     [][]byte
}

// wirePointer is the signed part: {1: user, 2: device, 3: manifest CID,
// 4: size, 5: time ms}.
type wirePointer struct {
	User     ident.UserID   `cbor:"1,keyasint"`
	Device   ident.DeviceID `cbor:"2,keyasint"`
	Manifest []byte         `cbor:"3,keyasint"`
	Size     uint64         `cbor:"4,keyasint"`
	Time     uint64         `cbor:"5,keyasint"`
}

// wirePointerRecord is the record: {1: pointer, 2: signature, 3: [+ link]}.
type wirePointerRecord struct {
	Pointer   wirePointer `cbor:"1,keyasint"`
	Signature []byte      `cbor:"2,keyasint"`
	Chain     [][]byte    `cbor:"3,keyasint"`
}

func (p BackupPointer) check() error {
	switch {
	case p.User.IsZero():
		return fmt.Errorf("%w: no user", ErrBadPointer)
	case p.Device.IsZero():
		return fmt.Errorf("%w: no device", ErrBadPointer)
	case p.Size == 0:
		return fmt.Errorf("%w: empty backup", ErrBadPointer)
	case p.Time.UnixMilli() <= 0 || p.Time.UnixMilli() > maxUnixMilli:
		return fmt.Errorf("%w: time %s out of range", ErrBadPointer, p.Time)
	}
	if err := CheckChunkCID(p.Manifest); err != nil {
		return fmt.Errorf("%w: manifest: %w", ErrBadPointer, err)
	}
	return nil
}

func (p BackupPointer) wire() wirePointer {
	return wirePointer{
		User:     p.User,
		Device:   p.Device,
		Manifest: p.Manifest.Bytes(),
		Size:     p.Size,
		Time:     uint64(p.Time.UnixMilli()),
	}
}

// signedBytes is what the device signs: the canonical encoding of the
// pointer alone.
func (p BackupPointer) signedBytes() []byte {
	b, err := encMode.Marshal(p.wire())
	if err != nil {
		panic(fmt.Sprintf("wire: encode backup pointer: %v", err)) // IDs and integers always encode
	}
	return b
}

// SignBackupPointer signs p with k, the signing key of device p.Device,
// and attaches the user's chain (encoded links, genesis first).
func SignBackupPointer(p BackupPointer, k e2ee.SigningKey, chain [][]byte) (PointerRecord, error) {
	if err := p.check(); err != nil {
		return PointerRecord{}, err
	}
	if len(chain) == 0 || len(chain) > ident.MaxChainLinks {
		return PointerRecord{}, fmt.Errorf("%w: chain of %d links (1 to %d)", ErrBadPointer, len(chain), ident.MaxChainLinks)
	}
	p.Time = time.UnixMilli(p.Time.UnixMilli()).UTC()
	return PointerRecord{Pointer: p, Signature: k.Sign(ident.DomainBackup, p.signedBytes()), Chain: chain}, nil
}

// Encode returns the record's canonical CBOR encoding.
func (r PointerRecord) Encode() ([]byte, error) {
	if err := r.Pointer.check(); err != nil {
		return nil, err
	}
	if len(r.Signature) != ident.SignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrBadPointer, len(r.Signature))
	}
	if len(r.Chain) == 0 || len(r.Chain) > ident.MaxChainLinks {
		return nil, fmt.Errorf("%w: chain of %d links (1 to %d)", ErrBadPointer, len(r.Chain), ident.MaxChainLinks)
	}
	b, err := encMode.Marshal(wirePointerRecord{Pointer: r.Pointer.wire(), Signature: r.Signature, Chain: r.Chain})
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrBadPointer, err)
	}
	if len(b) > MaxPointerRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadPointer, len(b), MaxPointerRecordSize)
	}
	return b, nil
}

// DecodePointerRecord decodes a record and checks its shape and limits.
// Only the canonical encoding is accepted. It does not verify the
// signature or the chain: Verify does.
func DecodePointerRecord(b []byte) (PointerRecord, error) {
	if len(b) > MaxPointerRecordSize {
		return PointerRecord{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadPointer, len(b), MaxPointerRecordSize)
	}
	var w wirePointerRecord
	if err := pointerDecMode.Unmarshal(b, &w); err != nil {
		return PointerRecord{}, fmt.Errorf("%w: %v", ErrBadPointer, err)
	}
	if w.Pointer.Time > maxUnixMilli {
		return PointerRecord{}, fmt.Errorf("%w: time out of range", ErrBadPointer)
	}
	m, err := ChunkCIDFromBytes(w.Pointer.Manifest)
	if err != nil {
		return PointerRecord{}, fmt.Errorf("%w: manifest: %w", ErrBadPointer, err)
	}
	r := PointerRecord{
		Pointer: BackupPointer{
			User:     w.Pointer.User,
			Device:   w.Pointer.Device,
			Manifest: m,
			Size:     w.Pointer.Size,
			Time:     time.UnixMilli(int64(w.Pointer.Time)).UTC(),
		},
		Signature: w.Signature,
		Chain:     w.Chain,
	}
	again, err := r.Encode()
	if err != nil {
		return PointerRecord{}, err
	}
	if !bytes.Equal(again, b) {
		return PointerRecord{}, fmt.Errorf("%w: not canonical CBOR", ErrBadPointer)
	}
	return r, nil
}

// Verify checks the chain from the user ID (ident.DecodeChain), that Device
// is a current (not revoked) device of that chain and the signature.
func (r PointerRecord) Verify() error {
	_, err := r.VerifyDevices()
	return err
}

// VerifyDevices is Verify that also returns the record's verified device
// set, so a caller can compare it with a newer chain it knows.
func (r PointerRecord) VerifyDevices() (ident.DeviceSet, error) {
	if err := r.Pointer.check(); err != nil {
		return ident.DeviceSet{}, err
	}
	set, _, err := ident.DecodeChain(r.Pointer.User, r.Chain)
	if err != nil {
		return ident.DeviceSet{}, fmt.Errorf("%w: chain of %s: %w", ErrBadPointer, r.Pointer.User, err)
	}
	dev, ok := set.Lookup(r.Pointer.Device)
	if !ok {
		return ident.DeviceSet{}, fmt.Errorf("%w: %s is not a current device of %s", ErrBadPointer, r.Pointer.Device, r.Pointer.User)
	}
	if err := dev.Signing.Verify(ident.DomainBackup, r.Pointer.signedBytes(), r.Signature); err != nil {
		return ident.DeviceSet{}, fmt.Errorf("%w: %w", ErrBadPointer, err)
	}
	return set, nil
}

// BackupUploadMessage is what a device signs (DomainBackupUpload) to
// authorize an upload to the node with peer ID peerID: the node, the user,
// the device, what is uploaded (a chunk CID's text form, or CheckWhat of a
// preflight) and the time in unix seconds, as canonical CBOR
// {1: peer ID, 2: user, 3: device, 4: what, 5: seconds}.
func BackupUploadMessage(peerID string, user ident.UserID, device ident.DeviceID, what string, t time.Time) []byte {
	b, err := encMode.Marshal(struct {
		PeerID string         `cbor:"1,keyasint"`
		User   ident.UserID   `cbor:"2,keyasint"`
		Device ident.DeviceID `cbor:"3,keyasint"`
		What   string         `cbor:"4,keyasint"`
		Time   int64          `cbor:"5,keyasint"`
	}{peerID, user, device, what, t.Unix()})
	if err != nil {
		panic(fmt.Sprintf("wire: encode backup upload message: %v", err)) // zero IDs are the caller's bug
	}
	return b
}

// CheckWhat is the "what" of a preflight quota check for a backup of
// bytes bytes in chunks chunks: "check:<bytes>:<chunks>".
func CheckWhat(bytes, chunks uint64) string {
	return "check:" + strconv.FormatUint(bytes, 10) + ":" + strconv.FormatUint(chunks, 10)
}

// UploadAuth is a device's authorization of one upload to one node: sent
// by the client in the Volo-User, Volo-Device, Volo-Time and
// Volo-Signature headers and forwarded by that node to the replicas.
type UploadAuth struct {
	User      ident.UserID
	Device    ident.DeviceID
	Time      time.Time // second precision
	Signature []byte
}

// SignUpload makes the authorization of device keys k (of user) to upload
// what to the node peerID at time t.
func SignUpload(k e2ee.DeviceKeys, user ident.UserID, peerID, what string, t time.Time) UploadAuth {
	t = time.Unix(t.Unix(), 0).UTC()
	id := k.ID()
	return UploadAuth{
		User:      user,
		Device:    id,
		Time:      t,
		Signature: k.Signing.Sign(DomainBackupUpload, BackupUploadMessage(peerID, user, id, what, t)),
	}
}

// Verify checks that the time is within BackupTimeSkew of now, that the
// device is a current device of devices (the user's verified chain, whose
// user must be a.User) and that the signature covers peerID and what.
func (a UploadAuth) Verify(peerID, what string, devices ident.DeviceSet, now time.Time) error {
	switch {
	case a.User.IsZero() || a.Device.IsZero():
		return fmt.Errorf("%w: no user or device", ErrUploadAuth)
	case !devices.User().Equal(a.User):
		return fmt.Errorf("%w: chain of %s, authorization of %s", ErrUploadAuth, devices.User(), a.User)
	}
	if d := now.Sub(a.Time); d > BackupTimeSkew || d < -BackupTimeSkew {
		return fmt.Errorf("%w: time %s is more than %s from %s", ErrUploadAuth, a.Time.Format(time.RFC3339), BackupTimeSkew, now.UTC().Format(time.RFC3339))
	}
	dev, ok := devices.Lookup(a.Device)
	if !ok {
		if devices.Revoked(a.Device) {
			return fmt.Errorf("%w: device %s of %s is revoked", ErrUploadAuth, a.Device, a.User)
		}
		return fmt.Errorf("%w: %s is not a device of %s", ErrUploadAuth, a.Device, a.User)
	}
	if err := dev.Signing.Verify(DomainBackupUpload, BackupUploadMessage(peerID, a.User, a.Device, what, a.Time), a.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrUploadAuth, err)
	}
	return nil
}
