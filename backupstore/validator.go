package backupstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// StoredChains gives the chain a node holds for a user with no network
// lookup; UserLookup is one.
type StoredChains interface {
	StoredDevices(ctx context.Context, user ident.UserID) (ident.DeviceSet, bool)
}

// PointerValidator is the DHT record validator of the volo-backup
// namespace: a value is a canonical PointerRecord of the user named in the
// key, signed by a device active in the newest chain the node knows (the
// one it holds, unless the record's chain extends it), and dated at most
// wire.PointerTimeSkew after the node's clock. Every node registers it, so
// no node stores, serves, forwards or selects another pointer.
type PointerValidator struct {
	// Now is the clock future-dated pointers are judged by (nil:
	// time.Now).
	Now func() time.Time
	// Chains, when set, gives the chains the node holds.
	Chains StoredChains
}

var _ record.Validator = PointerValidator{}

// userFromKey parses the user ID out of a "/volo-backup/<id>" key.
func userFromKey(key string) (ident.UserID, error) {
	ns, rest, err := record.SplitKey(key)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("%w: key %q: %v", wire.ErrBadPointer, key, err)
	}
	if ns != wire.PointerNamespace || strings.Contains(rest, "/") {
		return ident.UserID{}, fmt.Errorf("%w: key %q is not /%s/<user ID>", wire.ErrBadPointer, key, wire.PointerNamespace)
	}
	id, err := ident.ParseUserID(rest)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("%w: key %q: %w", wire.ErrBadPointer, key, err)
	}
	return id, nil
}

// decodePointer decodes and verifies a pointer record, which must be
// want's, and returns it with the device set of the chain it carries.
func decodePointer(value []byte, want ident.UserID) (wire.PointerRecord, ident.DeviceSet, error) {
	r, err := wire.DecodePointerRecord(value)
	if err != nil {
		return wire.PointerRecord{}, ident.DeviceSet{}, err
	}
	if !r.Pointer.User.Equal(want) {
		return wire.PointerRecord{}, ident.DeviceSet{}, fmt.Errorf("%w: pointer of %s under the key of %s", wire.ErrBadPointer, r.Pointer.User, want)
	}
	set, err := r.VerifyDevices()
	if err != nil {
		return wire.PointerRecord{}, ident.DeviceSet{}, err
	}
	return r, set, nil
}

// checkCurrent reports whether a verified pointer counts at now: dated at
// most wire.PointerTimeSkew after now, by a device active in the newest
// chain known. known is the chain the node holds (zero: none); the
// record's own chain (embedded) is the newest only when it extends known.
func checkCurrent(p wire.BackupPointer, embedded, known ident.DeviceSet, now time.Time) error {
	if err := p.CheckTime(now); err != nil {
		return err
	}
	if known.Version() == 0 || ident.Relate(known, embedded) == ident.ChainExtends {
		return nil
	}
	if _, ok := known.Lookup(p.Device); !ok {
		return fmt.Errorf("%w: %s is not an active device of %s in its chain at version %d", wire.ErrBadPointer, p.Device, p.User, known.Version())
	}
	return nil
}

// check decodes and verifies value under key and checks that it counts.
func (v PointerValidator) check(key string, value []byte) (wire.PointerRecord, error) {
	user, err := userFromKey(key)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	r, embedded, err := decodePointer(value, user)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	var known ident.DeviceSet
	if v.Chains != nil {
		known, _ = v.Chains.StoredDevices(context.Background(), user)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if err := checkCurrent(r.Pointer, embedded, known, now()); err != nil {
		return wire.PointerRecord{}, err
	}
	return r, nil
}

// Validate implements record.Validator.
func (v PointerValidator) Validate(key string, value []byte) error {
	_, err := v.check(key, value)
	return err
}

// Select implements record.Validator: the newest pointer that counts
// (latest time, then smallest manifest CID). Values that do not validate
// (future-dated ones included) are never selected.
func (v PointerValidator) Select(key string, values [][]byte) (int, error) {
	if _, err := userFromKey(key); err != nil {
		return 0, err
	}
	best := -1
	var bestPtr wire.BackupPointer
	for i, b := range values {
		r, err := v.check(key, b)
		if err != nil {
			continue
		}
		if best < 0 || r.Pointer.After(bestPtr) {
			best, bestPtr = i, r.Pointer
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: none of %d values of %s is valid", wire.ErrBadPointer, len(values), key)
	}
	return best, nil
}
