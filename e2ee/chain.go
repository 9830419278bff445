package e2ee

import (
	"fmt"
	"time"

	"github.com/volo-chat/volo/ident"
)

func linkTime(now time.Time) time.Time { return time.UnixMilli(now.UnixMilli()).UTC() }

// NewGenesis starts a new user chain with keys as its first device. The
// user ID is the returned link's UserID().
func NewGenesis(keys DeviceKeys, now time.Time) (ident.Link, error) {
	return NewGenesisWithRecovery(keys, ident.SigningPublic{}, now)
}

// NewGenesisWithRecovery is NewGenesis naming recovery, the public key of
// the user's recovery key (GenerateRecoveryKey), in the genesis link; a
// zero recovery names none.
func NewGenesisWithRecovery(keys DeviceKeys, recovery ident.SigningPublic, now time.Time) (ident.Link, error) {
	if keys.Signing.IsZero() || keys.Messaging.IsZero() {
		return ident.Link{}, fmt.Errorf("ident: new genesis: empty device keys: %w", ident.ErrBadKey)
	}
	if now.UnixMilli() < 0 {
		return ident.Link{}, fmt.Errorf("ident: new genesis: time %v before 1970: %w", now, ident.ErrInvalidLink)
	}
	pub := keys.Public()
	l := ident.Link{Seq: 1, Kind: ident.LinkGenesis, Time: linkTime(now), Device: pub, Signer: pub.ID(), Recovery: recovery}
	l.Sig = keys.Signing.Sign(ident.DomainLink, l.SignedBytes())
	return l, nil
}

// NewAddDeviceRequest is run on the new device: it signs a request to be
// added after head (which the existing device sent it, see LinkingOffer).
func NewAddDeviceRequest(head ident.ChainHead, newDevice DeviceKeys) (ident.AddDeviceRequest, error) {
	if head.User.IsZero() || head.Link.IsZero() || head.Version == 0 {
		return ident.AddDeviceRequest{}, fmt.Errorf("ident: new add-device request: incomplete chain head: %w", ident.ErrInvalidLink)
	}
	if newDevice.Signing.IsZero() || newDevice.Messaging.IsZero() {
		return ident.AddDeviceRequest{}, fmt.Errorf("ident: new add-device request: empty device keys: %w", ident.ErrBadKey)
	}
	r := ident.AddDeviceRequest{Head: head, Device: newDevice.Public()}
	r.Sig = newDevice.Signing.Sign(ident.DomainLinkRequest, r.SignedBytes())
	return r, nil
}

// NewAddDevice is run on an existing, active device of the chain described
// by set: it checks req (signature, head, device not yet in the chain) and
// signs the add-device link. now is clamped so that the link is never
// dated before the previous one.
func NewAddDevice(set ident.DeviceSet, signer DeviceKeys, req ident.AddDeviceRequest, now time.Time) (ident.Link, error) {
	return newAddDevice(set, signer.ID(), signer.Signing, req, now)
}

// NewRecoveryAddDevice is NewAddDevice signed by the user's recovery key
// instead of an existing device: it adds a device when none is at hand.
func NewRecoveryAddDevice(set ident.DeviceSet, recovery RecoveryKey, req ident.AddDeviceRequest, now time.Time) (ident.Link, error) {
	return newAddDevice(set, ident.RecoveryID(recovery.Public()), recovery.k, req, now)
}

func newAddDevice(set ident.DeviceSet, signerID ident.DeviceID, signer ident.Signer, req ident.AddDeviceRequest, now time.Time) (ident.Link, error) {
	if err := req.Verify(); err != nil {
		return ident.Link{}, fmt.Errorf("ident: new add-device link: %w", err)
	}
	if req.Head != set.Head() {
		return ident.Link{}, fmt.Errorf("ident: new add-device link: request is for %s version %d, chain is at version %d: %w",
			req.Head.User, req.Head.Version, set.Version(), ident.ErrChainOrder)
	}
	head := set.Head()
	l := ident.Link{
		Seq:       head.Version + 1,
		Kind:      ident.LinkAddDevice,
		Prev:      head.Link,
		Time:      linkTime(later(now, set.LastTime())),
		Device:    req.Device,
		Signer:    signerID,
		DeviceSig: req.Sig,
	}
	l.Sig = signer.Sign(ident.DomainLink, l.SignedBytes())
	if _, err := set.Apply(l); err != nil {
		return ident.Link{}, fmt.Errorf("ident: new add-device link: %w", err)
	}
	return l, nil
}

// NewRevokeDevice is run on an active device of the chain other than the
// one revoked: it signs a link revoking target. A device cannot revoke
// itself, so the last device of a user cannot be revoked.
func NewRevokeDevice(set ident.DeviceSet, signer DeviceKeys, target ident.DeviceID, now time.Time) (ident.Link, error) {
	return newRevokeDevice(set, signer.ID(), signer.Signing, target, now)
}

// NewRecoveryRevokeDevice is NewRevokeDevice signed by the user's recovery
// key: it revokes any device but the last active one, for instance one
// that was stolen.
func NewRecoveryRevokeDevice(set ident.DeviceSet, recovery RecoveryKey, target ident.DeviceID, now time.Time) (ident.Link, error) {
	return newRevokeDevice(set, ident.RecoveryID(recovery.Public()), recovery.k, target, now)
}

func newRevokeDevice(set ident.DeviceSet, signerID ident.DeviceID, signer ident.Signer, target ident.DeviceID, now time.Time) (ident.Link, error) {
	head := set.Head()
	if head.Version == 0 {
		return ident.Link{}, fmt.Errorf("ident: new revoke-device link: %w", ident.ErrEmptyChain)
	}
	l := ident.Link{
		Seq:     head.Version + 1,
		Kind:    ident.LinkRevokeDevice,
		Prev:    head.Link,
		Time:    linkTime(later(now, set.LastTime())),
		Revoked: target,
		Signer:  signerID,
	}
	l.Sig = signer.Sign(ident.DomainLink, l.SignedBytes())
	if _, err := set.Apply(l); err != nil {
		return ident.Link{}, fmt.Errorf("ident: new revoke-device link: %w", err)
	}
	return l, nil
}

func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
