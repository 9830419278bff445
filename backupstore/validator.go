package backupstore

import (
	"fmt"
	"strings"

	record "github.com/libp2p/go-libp2p-record"

	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// PointerValidator is the DHT record validator of the volo-backup
// namespace: a value is a canonical PointerRecord of the user named in the
// key, signed by a current device of the chain it carries. Every node
// registers it, so no node stores, serves or forwards another pointer.
type PointerValidator struct{}

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

// decodePointer decodes and verifies a pointer record, which must be want's.
func decodePointer(value []byte, want ident.UserID) (wire.PointerRecord, error) {
	r, err := wire.DecodePointerRecord(value)
	if err != nil {
		return wire.PointerRecord{}, err
	}
	if !r.Pointer.User.Equal(want) {
		return wire.PointerRecord{}, fmt.Errorf("%w: pointer of %s under the key of %s", wire.ErrBadPointer, r.Pointer.User, want)
	}
	if err := r.Verify(); err != nil {
		return wire.PointerRecord{}, err
	}
	return r, nil
}

// Validate implements record.Validator.
func (PointerValidator) Validate(key string, value []byte) error {
	user, err := userFromKey(key)
	if err != nil {
		return err
	}
	_, err = decodePointer(value, user)
	return err
}

// Select implements record.Validator: the newest valid pointer (latest
// time, then smallest manifest CID). Invalid values are never selected.
func (PointerValidator) Select(key string, values [][]byte) (int, error) {
	user, err := userFromKey(key)
	if err != nil {
		return 0, err
	}
	best := -1
	var bestPtr wire.BackupPointer
	for i, v := range values {
		r, err := decodePointer(v, user)
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
