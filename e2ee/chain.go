package e2ee

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
	ErrForgedLink = errors.New("e2ee: link signed by a device not in the chain")
	// ErrRevokedDevice: a revoked device signed, or is revoked or added again.
	ErrRevokedDevice = errors.New("e2ee: revoked device")
	// ErrChainOrder: wrong sequence number, previous-link CID, kind or time order.
	ErrChainOrder = errors.New("e2ee: chain out of order")
	// ErrUserIDMismatch: the genesis link does not hash to the expected user ID.
	ErrUserIDMismatch = errors.New("e2ee: genesis does not match user ID")
	// ErrInvalidLink: a link that is well ordered and signed but not allowed
	// (device added twice, unknown device revoked, a device revoking itself).
	ErrInvalidLink = errors.New("e2ee: invalid link")
	// ErrChainLimit: the chain would exceed MaxChainLinks or MaxActiveDevices.
	ErrChainLimit = errors.New("e2ee: chain limit exceeded")
	// ErrEmptyChain: no links at all.
	ErrEmptyChain = errors.New("e2ee: empty chain")
)

// ChainError reports the first failure found in a user chain.
type ChainError struct {
	Index int    // position of the failing link in the slice given, 0 = genesis
	Seq   uint64 // sequence number the link should have had
	Err   error  // wraps one of the sentinels above, ErrBadSignature or ErrMalformed
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("e2ee: chain link %d (seq %d): %v", e.Index, e.Seq, e.Err)
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
}

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

// signedBytes is what Signer signs: the encoding without field 9 (Sig).
func (l Link) signedBytes() []byte { return marshalCBOR(l.wire(false)) }

// ID returns the link's CID; for a genesis link it is the user ID.
func (l Link) ID() LinkID { return LinkID{sumCID(l.Encode())} }

// UserID returns the user ID a genesis link creates (the CID of its encoding).
func (l Link) UserID() UserID { return UserID{sumCID(l.Encode())} }

// DecodeLink decodes one link and checks its shape (fields present for its
// kind, key and ID sizes, canonical encoding). Signatures and chain order
// are checked by VerifyChain and DeviceSet.Apply.
func DecodeLink(data []byte) (Link, error) {
	var w linkWire
	if err := unmarshalCanonical("link", data, MaxLinkSize, &w); err != nil {
		return Link{}, err
	}
	bad := func(format string, a ...any) (Link, error) {
		return Link{}, fmt.Errorf("e2ee: decode link: "+format+": %w", append(a, ErrMalformed)...)
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
	if l.Signer, err = DeviceIDFromBytes(w.Signer); err != nil {
		return bad("signer: %v", err)
	}
	if len(l.Sig) != SignatureSize {
		return bad("signature: %d bytes, want %d", len(l.Sig), SignatureSize)
	}
	switch l.Kind {
	case LinkGenesis:
		if w.Prev != nil || w.Device == nil || w.Revoked != nil || w.DeviceSig != nil {
			return bad("genesis needs exactly seq, kind, time, device, signer, sig")
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

// DeviceSet is the state of a user chain after verification: the user's
// current devices, the revoked ones and the chain's head. It is immutable;
// Apply returns a new DeviceSet. The zero DeviceSet holds no chain.
type DeviceSet struct {
	user    UserID
	active  map[DeviceID]DevicePublic
	revoked map[DeviceID]struct{}
	links   []LinkID // links[i] is the ID of the link with seq i+1
	last    time.Time
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

// LinkIDs returns the IDs of every link of the chain, genesis first.
func (s DeviceSet) LinkIDs() []LinkID { return slices.Clone(s.links) }
