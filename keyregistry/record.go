package keyregistry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
	record "github.com/libp2p/go-libp2p-record"

	"github.com/volo-chat/volo/ident"
)

// Namespace is the DHT namespace of user chains: the record of user U is
// stored under "/volo-user/" + U.String().
const Namespace = "volo-user"

// MaxRecordSize bounds an encoded Record: a chain of ident.MaxChainLinks links
// of ident.MaxLinkSize bytes each, with their CBOR headers, plus the user ID
// and the attestation. Larger input is refused before it is parsed.
const MaxRecordSize = 1 + (1 + 2 + 36) + (1 + 3) + ident.MaxChainLinks*(3+ident.MaxLinkSize) + (1 + 3 + MaxAttestationSize)

// ErrBadRecord reports a record that does not decode or whose chain does
// not verify against the user ID it is stored under.
var ErrBadRecord = errors.New("keyregistry: bad user record")

// ErrRecordTooLarge reports a record over MaxRecordSize.
var ErrRecordTooLarge = errors.New("keyregistry: user record too large")

// Record is the value of a user's DHT record and of its gossip
// announcement: the user ID, the chain's links, genesis first, each in
// its canonical encoding, and the registering node's attestation (encoded
// Attestation). Encoded as deterministic CBOR {1: user ID (bstr 36), 2:
// [+ link (bstr)], 3: attestation (bstr)}. DecodeRecord refuses a record
// without key 3; Encode omits it when Attestation is empty.
type Record struct {
	User        ident.UserID `cbor:"1,keyasint"`
	Links       [][]byte     `cbor:"2,keyasint"`
	Attestation []byte       `cbor:"3,keyasint,omitempty"`
}

var (
	recEnc cbor.EncMode
	recDec cbor.DecMode
)

func init() {
	var err error
	if recEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	recDec, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   ident.MaxNestedLevels,
		MaxArrayElements:  ident.MaxChainLinks,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// RecordKey is the DHT key of user's chain.
func RecordKey(user ident.UserID) string { return "/" + Namespace + "/" + user.String() }

// Encode returns the canonical encoding of r.
func (r Record) Encode() []byte {
	b, err := recEnc.Marshal(r)
	if err != nil {
		// Only a UserID or a byte slice can be in r: both always encode.
		panic(fmt.Sprintf("keyregistry: encode record: %v", err))
	}
	return b
}

// Chain is a verified user chain: the device set, the encoded links it
// was verified from and the attestation of the node that registered the
// user.
type Chain struct {
	Set         ident.DeviceSet
	Links       [][]byte
	Attestation Attestation
}

// Record returns the chain as a record.
func (c Chain) Record() Record {
	r := Record{User: c.Set.User(), Links: c.Links}
	if c.Attestation.Node != "" {
		r.Attestation = c.Attestation.Encode()
	}
	return r
}

// Version is the sequence number of the chain's last link.
func (c Chain) Version() uint64 { return c.Set.Version() }

// DecodeRecord decodes a record, checks that it is canonical, verifies its
// chain (ident.DecodeChain) against its own user ID and its attestation
// (DecodeAttestation), which must be of the same user. A zero want accepts
// any user; otherwise the record must be want's. Whether the node accepts
// the attestation's kind and its attesting node is for the node's policy
// (Validator, the gossip validator), not for DecodeRecord.
func DecodeRecord(data []byte, want ident.UserID) (Chain, error) {
	if len(data) > MaxRecordSize {
		return Chain{}, fmt.Errorf("%w: %d bytes, limit %d", ErrRecordTooLarge, len(data), MaxRecordSize)
	}
	var r Record
	if err := recDec.Unmarshal(data, &r); err != nil {
		return Chain{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if r.User.IsZero() {
		return Chain{}, fmt.Errorf("%w: no user ID", ErrBadRecord)
	}
	if !bytes.Equal(r.Encode(), data) {
		return Chain{}, fmt.Errorf("%w: not canonical", ErrBadRecord)
	}
	if !want.IsZero() && !r.User.Equal(want) {
		return Chain{}, fmt.Errorf("%w: record of %s, want %s", ErrBadRecord, r.User, want)
	}
	if len(r.Attestation) == 0 {
		return Chain{}, fmt.Errorf("%w: %w", ErrBadRecord, ErrUnattested)
	}
	a, err := DecodeAttestation(r.Attestation)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if !a.User.Equal(r.User) {
		return Chain{}, fmt.Errorf("%w: %w: attests %s, record of %s", ErrBadRecord, ErrBadAttestation, a.User, r.User)
	}
	set, _, err := ident.DecodeChain(r.User, r.Links)
	if err != nil {
		return Chain{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	return Chain{Set: set, Links: r.Links, Attestation: a}, nil
}

// userFromKey parses the user ID out of a "/volo-user/<id>" key.
func userFromKey(key string) (ident.UserID, error) {
	ns, rest, err := record.SplitKey(key)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("%w: key %q: %v", ErrBadRecord, key, err)
	}
	if ns != Namespace || strings.Contains(rest, "/") {
		return ident.UserID{}, fmt.Errorf("%w: key %q is not /%s/<user ID>", ErrBadRecord, key, Namespace)
	}
	id, err := ident.ParseUserID(rest)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("%w: key %q: %w", ErrBadRecord, key, err)
	}
	return id, nil
}

// Validator is the DHT record validator of the volo-user namespace. Every
// node registers it, so no node stores, serves or forwards a chain that
// does not verify from the user ID in its key, nor a user without a valid
// registration attestation it accepts. The zero Validator refuses
// development attestations, counts no budget and knows of no anchor
// proofs; the registry's own also counts every new user against its
// attesting node's budget and knows the anchors in its store.
type Validator struct {
	// AllowDevelopment accepts users whose attestation is of kind
	// development.
	AllowDevelopment bool
	budget           *newUsers
	// anchored, if set, gives the anchors the node holds for user's links.
	anchored func(user ident.UserID) ident.AnchoredAt
}

var _ record.Validator = Validator{}

// Validate implements record.Validator: the value is a canonical record
// whose chain verifies against the user ID in key, with an attestation
// the node accepts; a user new to the node is counted against its
// attesting node's budget.
func (v Validator) Validate(key string, value []byte) error {
	user, err := userFromKey(key)
	if err != nil {
		return err
	}
	_, err = v.decode(value, user, true)
	return err
}

// decode is DecodeRecord followed by the node's policy: the attestation's
// kind must be accepted and, when count is set and the user is new to the
// node, its attesting node must have budget left.
func (v Validator) decode(data []byte, user ident.UserID, count bool) (Chain, error) {
	c, err := DecodeRecord(data, user)
	if err != nil {
		return Chain{}, err
	}
	if c.Attestation.Kind == KindDevelopment && !v.AllowDevelopment {
		return Chain{}, fmt.Errorf("%w: user %s, attested by %s", ErrDevelopmentUser, c.Set.User(), c.Attestation.Node)
	}
	if count && v.budget != nil {
		if err := v.budget.admit(c.Set.User(), c.Attestation.Node); err != nil {
			return Chain{}, err
		}
	}
	return c, nil
}

// Select implements record.Validator with the fork rule
// (ident.ResolveFork): among the values Validate would accept (not
// counted again), a chain that extends another wins over it, and of two
// forked chains the one the rule picks; among identical chains, the first
// given. Invalid values are never
// selected; if none is valid, Select fails.
func (v Validator) Select(key string, values [][]byte) (int, error) {
	user, err := userFromKey(key)
	if err != nil {
		return 0, err
	}
	var anchored ident.AnchoredAt
	if v.anchored != nil {
		anchored = v.anchored(user)
	}
	best, bestSet := -1, ident.DeviceSet{}
	for i, val := range values {
		c, err := v.decode(val, user, false)
		if err != nil {
			continue
		}
		if best < 0 || ident.ResolveFork(bestSet, c.Set, anchored).Candidate {
			best, bestSet = i, c.Set
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: none of %d values of %s is valid", ErrBadRecord, len(values), key)
	}
	return best, nil
}
