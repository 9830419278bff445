package ident

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Limits of a user chain.
const (
	// MaxLinkSize bounds one encoded link (a link with a device is about 1.5 KiB).
	MaxLinkSize = 2048
	// MaxChainLinks bounds the number of links in one user chain.
	MaxChainLinks = 1024
	// MaxActiveDevices bounds the devices of a user that are not revoked.
	MaxActiveDevices = 64
)

// Errors of chain construction and verification. A verification failure
// is a *ChainError naming the link; errors.Is sees the sentinel inside.
var (
	// ErrForgedLink: the link is signed by a device that is not in the chain.
	ErrForgedLink = errors.New("ident: link signed by a device not in the chain")
	// ErrRevokedDevice: a revoked device signed, or is revoked or added again.
	ErrRevokedDevice = errors.New("ident: revoked device")
	// ErrChainOrder: wrong sequence number, previous-link CID, kind or time order.
	ErrChainOrder = errors.New("ident: chain out of order")
	// ErrUserIDMismatch: the genesis link does not hash to the expected user ID.
	ErrUserIDMismatch = errors.New("ident: genesis does not match user ID")
	// ErrInvalidLink: a link that is well ordered and signed but not allowed
	// (device added twice, unknown device revoked, a device revoking itself).
	ErrInvalidLink = errors.New("ident: invalid link")
	// ErrChainLimit: the chain would exceed MaxChainLinks or MaxActiveDevices.
	ErrChainLimit = errors.New("ident: chain limit exceeded")
	// ErrEmptyChain: no links at all.
	ErrEmptyChain = errors.New("ident: empty chain")
)

// ChainError reports the first failure found in a user chain.
type ChainError struct {
	Index int    // position of the failing link in the slice given, 0 = genesis
	Seq   uint64 // sequence number the link should have had
	Err   error  // wraps one of the sentinels above, ErrBadSignature or ErrMalformed
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("ident: chain link %d (seq %d): %v", e.Index, e.Seq, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// LinkKind says what a link does.
type LinkKind uint8

// Link kinds.
const (
	LinkGenesis      LinkKind = 1 // names the first device; its CID is the user ID
	LinkAddDevice    LinkKind = 2 // adds a device, signed by an existing device and the new one
	LinkRevokeDevice LinkKind = 3 // revokes a device, signed by another remaining device
)

func (k LinkKind) String() string {
	switch k {
	case LinkGenesis:
		return "genesis"
	case LinkAddDevice:
		return "add-device"
	case LinkRevokeDevice:
		return "revoke-device"
	}
	return fmt.Sprintf("LinkKind(%d)", uint8(k))
}

// Link is one block of a user chain. Build links with NewGenesis,
// NewAddDevice and NewRevokeDevice; read them with DecodeLink.
type Link struct {
	Seq    uint64    // 1 for genesis, then +1 per link
	Kind   LinkKind  //
	Prev   LinkID    // ID of the previous link; zero in genesis
	Time   time.Time // creation time, millisecond precision, never before Prev's
	Device DevicePublic
	// Device: for genesis and add-device, the device named or added.
	Revoked DeviceID // for revoke-device, the device revoked
	Signer  DeviceID // the existing device whose signature is Sig (genesis: the device itself)
	// DeviceSig is, for add-device, the new device's signature over its
	// AddDeviceRequest (DomainLinkRequest).
	DeviceSig []byte
	// Sig is Signer's signature (DomainLink) over the link's encoding
	// without this field.
	Sig []byte
	// Recovery is, in a genesis link only and optionally, the user's
	// recovery public key: a later link whose Signer is RecoveryID(Recovery)
	// is signed by it and may add or revoke any device.
	Recovery SigningPublic
}

// RecoveryID is the signer ID of the links a recovery key signs: the CID
// (CIDv1, raw, sha2-256) of the 32 bytes of the public key. It cannot be
// the ID of a device, whose CID is over a DevicePublic encoding.
func RecoveryID(pub SigningPublic) DeviceID { return DeviceID{sumCID(pub.k[:])} }

type linkWire struct {
	Seq       uint64            `cbor:"1,keyasint"`
	Kind      uint8             `cbor:"2,keyasint"`
	Prev      []byte            `cbor:"3,keyasint,omitempty"`
	Time      int64             `cbor:"4,keyasint"`
	Device    *devicePublicWire `cbor:"5,keyasint,omitempty"`
	Revoked   []byte            `cbor:"6,keyasint,omitempty"`
	Signer    []byte            `cbor:"7,keyasint"`
	DeviceSig []byte            `cbor:"8,keyasint,omitempty"`
	Sig       []byte            `cbor:"9,keyasint,omitempty"`
	Recovery  []byte            `cbor:"10,keyasint,omitempty"`
}

func idBytes(defined bool, b func() []byte) []byte {
	if !defined {
		return nil
	}
	return b()
}

func (l Link) wire(withSig bool) linkWire {
	w := linkWire{
		Seq:       l.Seq,
		Kind:      uint8(l.Kind),
		Prev:      idBytes(!l.Prev.IsZero(), l.Prev.Bytes),
		Time:      l.Time.UnixMilli(),
		Revoked:   idBytes(!l.Revoked.IsZero(), l.Revoked.Bytes),
		Signer:    idBytes(!l.Signer.IsZero(), l.Signer.Bytes),
		DeviceSig: l.DeviceSig,
		Recovery:  idBytes(!l.Recovery.IsZero(), l.Recovery.Bytes),
	}
	if !l.Device.Signing.IsZero() || !l.Device.Messaging.IsZero() {
		w.Device = &devicePublicWire{Signing: l.Device.Signing.k[:], Messaging: []byte(l.Device.Messaging.raw)}
	}
	if withSig {
		w.Sig = l.Sig
	}
	return w
}

// Encode returns the canonical CBOR encoding of the link, signatures included.
func (l Link) Encode() []byte { return marshalCBOR(l.wire(true)) }

// SignedBytes is what Signer signs: the encoding without field 9 (Sig).
func (l Link) SignedBytes() []byte { return marshalCBOR(l.wire(false)) }

// ID returns the link's CID; for a genesis link it is the user ID.
func (l Link) ID() LinkID { return LinkID{sumCID(l.Encode())} }

// UserID returns the user ID a genesis link creates (the CID of its encoding).
func (l Link) UserID() UserID { return UserID{sumCID(l.Encode())} }

// DecodeLink decodes one link and checks its shape (fields present for its
// kind, key and ID sizes, canonical encoding). Signatures and chain order
// are checked by VerifyChain and DeviceSet.Apply.
func DecodeLink(data []byte) (Link, error) {
	var w linkWire
	if err := UnmarshalCanonical("link", data, MaxLinkSize, &w); err != nil {
		return Link{}, err
	}
	bad := func(format string, a ...any) (Link, error) {
		return Link{}, fmt.Errorf("ident: decode link: "+format+": %w", append(a, ErrMalformed)...)
	}
	l := Link{Seq: w.Seq, Kind: LinkKind(w.Kind), DeviceSig: w.DeviceSig, Sig: w.Sig}
	if w.Time < 0 {
		return bad("negative time %d", w.Time)
	}
	l.Time = time.UnixMilli(w.Time).UTC()
	var err error
	if w.Prev != nil {
		if l.Prev, err = LinkIDFromBytes(w.Prev); err != nil {
			return bad("prev: %v", err)
		}
	}
	if w.Device != nil {
		if l.Device.Signing, err = ParseSigningPublic(w.Device.Signing); err != nil {
			return bad("device: %v", err)
		}
		if l.Device.Messaging, err = ParseMessagingPublic(w.Device.Messaging); err != nil {
			return bad("device: %v", err)
		}
	}
	if w.Revoked != nil {
		if l.Revoked, err = DeviceIDFromBytes(w.Revoked); err != nil {
			return bad("revoked: %v", err)
		}
	}
	if w.Recovery != nil {
		if l.Kind != LinkGenesis {
			return bad("a recovery key in a %s link", l.Kind)
		}
		if l.Recovery, err = ParseSigningPublic(w.Recovery); err != nil {
			return bad("recovery: %v", err)
		}
	}
	if l.Signer, err = DeviceIDFromBytes(w.Signer); err != nil {
		return bad("signer: %v", err)
	}
	if len(l.Sig) != SignatureSize {
		return bad("signature: %d bytes, want %d", len(l.Sig), SignatureSize)
	}
	switch l.Kind {
	case LinkGenesis:
		if w.Prev != nil || w.Device == nil || w.Revoked != nil || w.DeviceSig != nil {
			return bad("genesis needs exactly seq, kind, time, device, signer, sig and an optional recovery key")
		}
	case LinkAddDevice:
		if w.Prev == nil || w.Device == nil || w.Revoked != nil || len(w.DeviceSig) != SignatureSize {
			return bad("add-device needs prev, device and a %d-byte device signature, no revoked", SignatureSize)
		}
	case LinkRevokeDevice:
		if w.Prev == nil || w.Device != nil || w.Revoked == nil || w.DeviceSig != nil {
			return bad("revoke-device needs prev and revoked, no device")
		}
	default:
		return bad("unknown kind %d", w.Kind)
	}
	return l, nil
}

// ChainHead names the end of a verified chain: what a new device signs its
// AddDeviceRequest against.
type ChainHead struct {
	User    UserID
	Version uint64 // sequence number of the last link
	Link    LinkID // ID of the last link
}

// MaxChainHeadSize bounds an encoded ChainHead.
const MaxChainHeadSize = 1 + (1 + 2 + IDSize) + (1 + 9) + (1 + 2 + IDSize)

type chainHeadWire struct {
	User    []byte `cbor:"1,keyasint"`
	Version uint64 `cbor:"2,keyasint"`
	Link    []byte `cbor:"3,keyasint"`
}

// Encode returns the canonical CBOR encoding
// {1: user ID (bstr 36), 2: version (uint), 3: head link ID (bstr 36)},
// the first message of a linking exchange.
func (h ChainHead) Encode() []byte {
	return marshalCBOR(chainHeadWire{
		User:    idBytes(!h.User.IsZero(), h.User.Bytes),
		Version: h.Version,
		Link:    idBytes(!h.Link.IsZero(), h.Link.Bytes),
	})
}

// DecodeChainHead decodes the form written by ChainHead.Encode.
func DecodeChainHead(data []byte) (ChainHead, error) {
	var w chainHeadWire
	if err := UnmarshalCanonical("chain head", data, MaxChainHeadSize, &w); err != nil {
		return ChainHead{}, err
	}
	var h ChainHead
	var err error
	if h.User, err = UserIDFromBytes(w.User); err != nil {
		return ChainHead{}, fmt.Errorf("e2ee: decode chain head: %w", err)
	}
	if h.Link, err = LinkIDFromBytes(w.Link); err != nil {
		return ChainHead{}, fmt.Errorf("e2ee: decode chain head: %w", err)
	}
	if w.Version == 0 || w.Version > MaxChainLinks {
		return ChainHead{}, fmt.Errorf("e2ee: decode chain head: version %d: %w", w.Version, ErrMalformed)
	}
	h.Version = w.Version
	return h, nil
}

// DeviceSet is the state of a user chain after verification: the user's
// current devices, the revoked ones and the chain's head. It is immutable;
// Apply returns a new DeviceSet. The zero DeviceSet holds no chain.
type DeviceSet struct {
	user    UserID
	active  map[DeviceID]DevicePublic
	revoked map[DeviceID]struct{}
	links   []LinkID // links[i] is the ID of the link with seq i+1
	last    time.Time
	// recovery is the recovery key named in genesis (zero: none);
	// byRecovery[i] says the link with seq i+1 was signed by it.
	recovery   SigningPublic
	byRecovery []bool
}

// Recovery returns the user's recovery public key, if genesis named one.
func (s DeviceSet) Recovery() (SigningPublic, bool) { return s.recovery, !s.recovery.IsZero() }

// SignedByRecovery reports whether the link with sequence number seq was
// signed by the user's recovery key.
func (s DeviceSet) SignedByRecovery(seq uint64) bool {
	return seq >= 1 && seq <= uint64(len(s.byRecovery)) && s.byRecovery[seq-1]
}

// User returns the user the chain belongs to.
func (s DeviceSet) User() UserID { return s.user }

// Lookup returns the active (not revoked) device with the given ID.
func (s DeviceSet) Lookup(id DeviceID) (DevicePublic, bool) {
	d, ok := s.active[id]
	return d, ok
}

// Devices returns the active devices sorted by device ID.
func (s DeviceSet) Devices() []DevicePublic {
	ids := s.DeviceIDs()
	out := make([]DevicePublic, len(ids))
	for i, id := range ids {
		out[i] = s.active[id]
	}
	return out
}

// DeviceIDs returns the IDs of the active devices, sorted.
func (s DeviceSet) DeviceIDs() []DeviceID {
	ids := slices.Collect(maps.Keys(s.active))
	slices.SortFunc(ids, DeviceID.Compare)
	return ids
}

// Len returns the number of active devices.
func (s DeviceSet) Len() int { return len(s.active) }

// Revoked reports whether the device was added to the chain and later revoked.
func (s DeviceSet) Revoked(id DeviceID) bool {
	_, ok := s.revoked[id]
	return ok
}

// Version returns the sequence number of the last link (0 for the zero set).
// It grows by one with every change of the device set.
func (s DeviceSet) Version() uint64 { return uint64(len(s.links)) }

// Head returns the chain's head, or a zero ChainHead for the zero set.
func (s DeviceSet) Head() ChainHead {
	if len(s.links) == 0 {
		return ChainHead{}
	}
	return ChainHead{User: s.user, Version: s.Version(), Link: s.links[len(s.links)-1]}
}

// LastTime returns the time of the chain's last link: a new link is never
// dated before it.
func (s DeviceSet) LastTime() time.Time { return s.last }

// LinkIDs returns the IDs of every link of the chain, genesis first.
func (s DeviceSet) LinkIDs() []LinkID { return slices.Clone(s.links) }

// AddDeviceRequest is made and signed by a new device: it asks to be added
// to a user's chain right after the given head. The binding to the head
// means a request cannot be replayed later, e.g. to add a device back after
// it was revoked. The existing device turns it into a link with NewAddDevice.
type AddDeviceRequest struct {
	Head   ChainHead
	Device DevicePublic
	Sig    []byte // the new device's signature, DomainLinkRequest, over the encoding without Sig
}

// MaxAddDeviceRequestSize bounds an encoded AddDeviceRequest.
const MaxAddDeviceRequestSize = 1536

type addDeviceRequestWire struct {
	User    []byte            `cbor:"1,keyasint"`
	Version uint64            `cbor:"2,keyasint"`
	Head    []byte            `cbor:"3,keyasint"`
	Device  *devicePublicWire `cbor:"4,keyasint"`
	Sig     []byte            `cbor:"5,keyasint,omitempty"`
}

func (r AddDeviceRequest) wire(withSig bool) addDeviceRequestWire {
	w := addDeviceRequestWire{
		User:    idBytes(!r.Head.User.IsZero(), r.Head.User.Bytes),
		Version: r.Head.Version,
		Head:    idBytes(!r.Head.Link.IsZero(), r.Head.Link.Bytes),
		Device:  &devicePublicWire{Signing: r.Device.Signing.k[:], Messaging: []byte(r.Device.Messaging.raw)},
	}
	if withSig {
		w.Sig = r.Sig
	}
	return w
}

// Encode returns the canonical CBOR encoding
// {1: user ID, 2: version, 3: head link ID, 4: device, 5: sig}.
func (r AddDeviceRequest) Encode() []byte { return marshalCBOR(r.wire(true)) }

// DecodeAddDeviceRequest decodes a request and checks the new device's signature.
func DecodeAddDeviceRequest(data []byte) (AddDeviceRequest, error) {
	var w addDeviceRequestWire
	if err := UnmarshalCanonical("add-device request", data, MaxAddDeviceRequestSize, &w); err != nil {
		return AddDeviceRequest{}, err
	}
	var r AddDeviceRequest
	var err error
	if r.Head.User, err = UserIDFromBytes(w.User); err != nil {
		return AddDeviceRequest{}, fmt.Errorf("ident: decode add-device request: %w", err)
	}
	if r.Head.Link, err = LinkIDFromBytes(w.Head); err != nil {
		return AddDeviceRequest{}, fmt.Errorf("ident: decode add-device request: %w", err)
	}
	r.Head.Version = w.Version
	if w.Device == nil {
		return AddDeviceRequest{}, fmt.Errorf("ident: decode add-device request: no device: %w", ErrMalformed)
	}
	if r.Device.Signing, err = ParseSigningPublic(w.Device.Signing); err != nil {
		return AddDeviceRequest{}, fmt.Errorf("ident: decode add-device request: %w", err)
	}
	if r.Device.Messaging, err = ParseMessagingPublic(w.Device.Messaging); err != nil {
		return AddDeviceRequest{}, fmt.Errorf("ident: decode add-device request: %w", err)
	}
	r.Sig = w.Sig
	if err := r.Verify(); err != nil {
		return AddDeviceRequest{}, err
	}
	return r, nil
}

// SignedBytes is what the new device signs: the encoding without Sig.
func (r AddDeviceRequest) SignedBytes() []byte { return marshalCBOR(r.wire(false)) }

// Verify checks the new device's signature on the request.
func (r AddDeviceRequest) Verify() error {
	if err := r.Device.Signing.Verify(DomainLinkRequest, marshalCBOR(r.wire(false)), r.Sig); err != nil {
		return fmt.Errorf("ident: add-device request of %s: %w", r.Device.ID(), err)
	}
	return nil
}

// VerifyChain verifies a whole user chain from the user ID alone: the
// genesis link hashes to user, sequence numbers count up from 1, each link
// names the CID of the one before, times never go back, every signature
// verifies, every signer is an active device at that point, and the limits
// hold. The error of the first failing link is a *ChainError.
func VerifyChain(user UserID, links []Link) (DeviceSet, error) {
	if len(links) == 0 {
		return DeviceSet{}, &ChainError{Index: 0, Seq: 1, Err: ErrEmptyChain}
	}
	if len(links) > MaxChainLinks {
		return DeviceSet{}, &ChainError{Index: MaxChainLinks, Seq: MaxChainLinks + 1,
			Err: fmt.Errorf("%d links, limit %d: %w", len(links), MaxChainLinks, ErrChainLimit)}
	}
	set, err := verifyGenesis(user, links[0])
	if err != nil {
		return DeviceSet{}, &ChainError{Index: 0, Seq: 1, Err: err}
	}
	for i, l := range links[1:] {
		if set, err = set.apply(l); err != nil {
			return DeviceSet{}, &ChainError{Index: i + 1, Seq: uint64(i + 2), Err: err}
		}
	}
	return set, nil
}

// DecodeChain decodes encoded links and verifies them with VerifyChain.
func DecodeChain(user UserID, encoded [][]byte) (DeviceSet, []Link, error) {
	if len(encoded) > MaxChainLinks {
		return DeviceSet{}, nil, &ChainError{Index: MaxChainLinks, Seq: MaxChainLinks + 1,
			Err: fmt.Errorf("%d links, limit %d: %w", len(encoded), MaxChainLinks, ErrChainLimit)}
	}
	links := make([]Link, len(encoded))
	for i, b := range encoded {
		l, err := DecodeLink(b)
		if err != nil {
			return DeviceSet{}, nil, &ChainError{Index: i, Seq: uint64(i + 1), Err: err}
		}
		links[i] = l
	}
	set, err := VerifyChain(user, links)
	if err != nil {
		return DeviceSet{}, nil, err
	}
	return set, links, nil
}

func verifyGenesis(user UserID, l Link) (DeviceSet, error) {
	id, err := checkShape(l)
	if err != nil {
		return DeviceSet{}, err
	}
	if l.Kind != LinkGenesis {
		return DeviceSet{}, fmt.Errorf("first link is %s, want genesis: %w", l.Kind, ErrChainOrder)
	}
	if l.Seq != 1 {
		return DeviceSet{}, fmt.Errorf("genesis has seq %d, want 1: %w", l.Seq, ErrChainOrder)
	}
	if !id.c.Equals(user.c) {
		return DeviceSet{}, fmt.Errorf("genesis hashes to %s, want %s: %w", id, user, ErrUserIDMismatch)
	}
	devID := l.Device.ID()
	if !l.Recovery.IsZero() && l.Recovery.Equal(l.Device.Signing) {
		return DeviceSet{}, fmt.Errorf("genesis recovery key is the device's signing key: %w", ErrInvalidLink)
	}
	if !l.Signer.Equal(devID) {
		return DeviceSet{}, fmt.Errorf("genesis signer %s is not its device %s: %w", l.Signer, devID, ErrForgedLink)
	}
	if err := l.Device.Signing.Verify(DomainLink, l.SignedBytes(), l.Sig); err != nil {
		return DeviceSet{}, err
	}
	return DeviceSet{
		user:       user,
		active:     map[DeviceID]DevicePublic{devID: l.Device},
		revoked:    map[DeviceID]struct{}{},
		links:      []LinkID{id},
		last:       l.Time,
		recovery:   l.Recovery,
		byRecovery: []bool{false},
	}, nil
}

// checkShape checks what DecodeLink checks, for links built in memory, and
// returns the link's ID.
func checkShape(l Link) (LinkID, error) {
	enc := l.Encode()
	if len(enc) > MaxLinkSize {
		return LinkID{}, fmt.Errorf("encoded link over %d bytes: %w", MaxLinkSize, ErrChainLimit)
	}
	if err := checkFields(l); err != nil {
		return LinkID{}, err
	}
	return LinkID{sumCID(enc)}, nil
}

func checkFields(l Link) error {
	if l.Time.UnixMilli() < 0 || !l.Time.Equal(time.UnixMilli(l.Time.UnixMilli())) {
		return fmt.Errorf("time %v not a non-negative whole millisecond: %w", l.Time, ErrMalformed)
	}
	if l.Signer.IsZero() {
		return fmt.Errorf("no signer: %w", ErrMalformed)
	}
	hasDevice := !l.Device.Signing.IsZero() && !l.Device.Messaging.IsZero()
	switch l.Kind {
	case LinkGenesis:
		if !l.Prev.IsZero() || !hasDevice || !l.Revoked.IsZero() || l.DeviceSig != nil {
			return fmt.Errorf("genesis needs exactly seq, kind, time, device, signer, sig and an optional recovery key: %w", ErrMalformed)
		}
	case LinkAddDevice:
		if l.Prev.IsZero() || !hasDevice || !l.Revoked.IsZero() || len(l.DeviceSig) != SignatureSize {
			return fmt.Errorf("add-device needs prev, device and device signature, no revoked: %w", ErrMalformed)
		}
	case LinkRevokeDevice:
		if l.Prev.IsZero() || hasDevice || l.Revoked.IsZero() || l.DeviceSig != nil {
			return fmt.Errorf("revoke-device needs prev and revoked, no device: %w", ErrMalformed)
		}
	default:
		return fmt.Errorf("unknown link kind %d: %w", l.Kind, ErrMalformed)
	}
	if l.Kind != LinkGenesis && !l.Recovery.IsZero() {
		return fmt.Errorf("a recovery key in a %s link: %w", l.Kind, ErrMalformed)
	}
	return nil
}

// Apply verifies one link appended to the chain of s and returns the new
// set; s itself is unchanged. A node holding a verified chain uses it to
// accept the next link without verifying the whole chain again.
func (s DeviceSet) Apply(l Link) (DeviceSet, error) {
	if s.Version() == 0 {
		return DeviceSet{}, &ChainError{Index: 0, Seq: 1, Err: fmt.Errorf("apply to an empty set: use VerifyChain: %w", ErrEmptyChain)}
	}
	n, err := s.apply(l)
	if err != nil {
		return DeviceSet{}, &ChainError{Index: len(s.links), Seq: s.Version() + 1, Err: err}
	}
	return n, nil
}

func (s DeviceSet) apply(l Link) (DeviceSet, error) {
	linkID, err := checkShape(l)
	if err != nil {
		return DeviceSet{}, err
	}
	head := s.Head()
	if l.Kind == LinkGenesis {
		return DeviceSet{}, fmt.Errorf("second genesis: %w", ErrChainOrder)
	}
	if l.Seq != head.Version+1 {
		return DeviceSet{}, fmt.Errorf("seq %d, want %d: %w", l.Seq, head.Version+1, ErrChainOrder)
	}
	if !l.Prev.Equal(head.Link) {
		return DeviceSet{}, fmt.Errorf("prev %s, want %s: %w", l.Prev, head.Link, ErrChainOrder)
	}
	if len(s.links) >= MaxChainLinks {
		return DeviceSet{}, fmt.Errorf("chain already has %d links: %w", MaxChainLinks, ErrChainLimit)
	}
	if l.Time.Before(s.last) {
		return DeviceSet{}, fmt.Errorf("time %v before previous link's %v: %w", l.Time, s.last, ErrChainOrder)
	}
	byRecovery := !s.recovery.IsZero() && l.Signer.Equal(RecoveryID(s.recovery))
	signerKey := s.recovery
	if !byRecovery {
		signer, ok := s.active[l.Signer]
		if !ok {
			if s.Revoked(l.Signer) {
				return DeviceSet{}, fmt.Errorf("signer %s: %w", l.Signer, ErrRevokedDevice)
			}
			return DeviceSet{}, fmt.Errorf("signer %s: %w", l.Signer, ErrForgedLink)
		}
		signerKey = signer.Signing
	}
	if err := signerKey.Verify(DomainLink, l.SignedBytes(), l.Sig); err != nil {
		return DeviceSet{}, err
	}
	n := DeviceSet{user: s.user, active: maps.Clone(s.active), revoked: s.revoked,
		links: append(slices.Clip(s.links), linkID), last: l.Time,
		recovery: s.recovery, byRecovery: append(slices.Clip(s.byRecovery), byRecovery)}
	switch l.Kind {
	case LinkAddDevice:
		id := l.Device.ID()
		if _, ok := s.active[id]; ok {
			return DeviceSet{}, fmt.Errorf("device %s already in the chain: %w", id, ErrInvalidLink)
		}
		if s.Revoked(id) {
			return DeviceSet{}, fmt.Errorf("device %s was revoked and cannot come back: %w", id, ErrRevokedDevice)
		}
		if len(s.active) >= MaxActiveDevices {
			return DeviceSet{}, fmt.Errorf("already %d active devices: %w", MaxActiveDevices, ErrChainLimit)
		}
		req := AddDeviceRequest{Head: head, Device: l.Device, Sig: l.DeviceSig}
		if err := req.Verify(); err != nil {
			return DeviceSet{}, err
		}
		n.active[id] = l.Device
	case LinkRevokeDevice:
		if l.Revoked.Equal(l.Signer) {
			return DeviceSet{}, fmt.Errorf("device %s revokes itself: %w", l.Signer, ErrInvalidLink)
		}
		if s.Revoked(l.Revoked) {
			return DeviceSet{}, fmt.Errorf("device %s already revoked: %w", l.Revoked, ErrRevokedDevice)
		}
		if _, ok := s.active[l.Revoked]; !ok {
			return DeviceSet{}, fmt.Errorf("device %s is not in the chain: %w", l.Revoked, ErrInvalidLink)
		}
		if byRecovery && len(s.active) == 1 {
			return DeviceSet{}, fmt.Errorf("recovery key revokes %s, the last device: %w", l.Revoked, ErrInvalidLink)
		}
		delete(n.active, l.Revoked)
		n.revoked = maps.Clone(s.revoked)
		n.revoked[l.Revoked] = struct{}{}
	}
	return n, nil
}

// ChainRelation is how a candidate chain relates to a known one.
type ChainRelation int

// Chain relations, see Relate.
const (
	ChainSame      ChainRelation = iota // same links
	ChainExtends                        // the candidate has every known link and more: keep it
	ChainRollback                       // the candidate is a strict prefix of the known chain: refuse it
	ChainForked                         // same user, different links from some point: refuse and alert
	ChainOtherUser                      // different users
)

func (r ChainRelation) String() string {
	switch r {
	case ChainSame:
		return "same"
	case ChainExtends:
		return "extends"
	case ChainRollback:
		return "rollback"
	case ChainForked:
		return "forked"
	case ChainOtherUser:
		return "other-user"
	}
	return fmt.Sprintf("ChainRelation(%d)", int(r))
}

// Relate says how the verified chain candidate relates to the verified
// chain known. Nodes keep the longer chain only when candidate extends
// known; a rolled-back (shorter) or forked chain is detected here.
func Relate(known, candidate DeviceSet) ChainRelation {
	if !known.user.Equal(candidate.user) {
		return ChainOtherUser
	}
	n := min(len(known.links), len(candidate.links))
	for i := range n {
		if !known.links[i].Equal(candidate.links[i]) {
			return ChainForked
		}
	}
	switch {
	case len(candidate.links) == len(known.links):
		return ChainSame
	case len(candidate.links) > len(known.links):
		return ChainExtends
	}
	return ChainRollback
}
