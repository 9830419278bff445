package e2ee

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/volo-chat/volo/ident"
)

// Groups (docs/protocol.md, "Groups").
const (
	// MaxGroupMembers bounds the users of one group.
	MaxGroupMembers = 1024
	// maxGroupStateSize bounds an encoded group state.
	maxGroupStateSize = 2*MaxGroupMembers*(2+ident.IDSize) + 512
	groupStateVersion = 1
)

// Errors of group states.
var (
	// ErrNotAdmin reports a group state signed by a user who is not an
	// admin of the state it replaces (or, for a new group, of itself).
	ErrNotAdmin = errors.New("e2ee: signer is not a group admin")
	// ErrGroupOrder reports a state that does not follow the previous one:
	// another group ID, a version other than previous+1, a wrong previous
	// hash, or a time before the previous state's.
	ErrGroupOrder = errors.New("e2ee: group state out of order")
	// ErrInvalidGroup reports a state that breaks the rules of its own:
	// no members, too many, admins that are not members, no admin.
	ErrInvalidGroup = errors.New("e2ee: invalid group state")
	// ErrGroupMembers reports member device sets that do not match the
	// group's members.
	ErrGroupMembers = errors.New("e2ee: device sets do not match the group members")
)

// GroupStateHash is the SHA-256 of a group state's full encoding.
type GroupStateHash [sha256.Size]byte

// GroupState is one version of a group: its members and admins, signed by
// a device of an admin. Each state names the hash of the one before it.
// A group's conversation ID is its ID.
type GroupState struct {
	ID         ConversationID
	Version    uint64         // 1 for a new group, then +1 per change
	Prev       GroupStateHash // hash of the previous state; zero for version 1
	Members    []ident.UserID // sorted, no repeats
	Admins     []ident.UserID // sorted, no repeats, a subset of Members
	Time       time.Time      // millisecond precision
	SignerUser ident.UserID   // an admin (of the previous state, for version > 1)
	Signer     ident.DeviceID // the signing device, one of SignerUser's
	Sig        []byte         // Signer's signature (DomainGroup) over the encoding without Sig
}

type groupStateWire struct {
	Format     uint8    `cbor:"1,keyasint"`
	ID         []byte   `cbor:"2,keyasint"`
	Version    uint64   `cbor:"3,keyasint"`
	Prev       []byte   `cbor:"4,keyasint,omitempty"`
	Members    [][]byte `cbor:"5,keyasint"`
	Admins     [][]byte `cbor:"6,keyasint"`
	Time       int64    `cbor:"7,keyasint"`
	SignerUser []byte   `cbor:"8,keyasint"`
	Signer     []byte   `cbor:"9,keyasint"`
	Sig        []byte   `cbor:"10,keyasint,omitempty"`
}

func userIDsBytes(ids []ident.UserID) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = idBytes(!id.IsZero(), id.Bytes)
	}
	return out
}

func (g *GroupState) wire(withSig bool) groupStateWire {
	w := groupStateWire{
		Format:     groupStateVersion,
		ID:         g.ID[:],
		Version:    g.Version,
		Members:    userIDsBytes(g.Members),
		Admins:     userIDsBytes(g.Admins),
		Time:       g.Time.UnixMilli(),
		SignerUser: idBytes(!g.SignerUser.IsZero(), g.SignerUser.Bytes),
		Signer:     idBytes(!g.Signer.IsZero(), g.Signer.Bytes),
	}
	if g.Prev != (GroupStateHash{}) {
		w.Prev = g.Prev[:]
	}
	if withSig {
		w.Sig = g.Sig
	}
	return w
}

// Encode returns the canonical CBOR encoding of the state.
func (g *GroupState) Encode() []byte { return marshalCBOR(g.wire(true)) }

func (g *GroupState) signedBytes() []byte { return marshalCBOR(g.wire(false)) }

// Hash returns the SHA-256 of the state's encoding; the next state's Prev.
func (g *GroupState) Hash() GroupStateHash { return sha256.Sum256(g.Encode()) }

// IsMember reports whether u is a member.
func (g *GroupState) IsMember(u ident.UserID) bool { return containsUser(g.Members, u) }

// IsAdmin reports whether u is an admin.
func (g *GroupState) IsAdmin(u ident.UserID) bool { return containsUser(g.Admins, u) }

func containsUser(sorted []ident.UserID, u ident.UserID) bool {
	_, ok := slices.BinarySearchFunc(sorted, u, ident.UserID.Compare)
	return ok
}

// sortUsers returns ids sorted without repeats.
func sortUsers(ids []ident.UserID) []ident.UserID {
	s := slices.Clone(ids)
	slices.SortFunc(s, ident.UserID.Compare)
	return slices.CompactFunc(s, ident.UserID.Equal)
}

// checkShape checks the rules a state must follow on its own.
func (g *GroupState) checkShape() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("e2ee: group %s version %d: "+format+": %w", append([]any{g.ID, g.Version}, append(a, ErrInvalidGroup)...)...)
	}
	switch {
	case g.ID.IsZero():
		return bad("zero group ID")
	case g.Version == 0:
		return bad("version 0")
	case (g.Version == 1) != (g.Prev == GroupStateHash{}):
		return bad("previous hash must be present exactly when version > 1")
	case len(g.Members) == 0 || len(g.Members) > MaxGroupMembers:
		return bad("%d members, want 1 to %d", len(g.Members), MaxGroupMembers)
	case len(g.Admins) == 0:
		return bad("no admin")
	case g.Time.UnixMilli() < 0:
		return bad("time before 1970")
	}
	for _, list := range [][]ident.UserID{g.Members, g.Admins} {
		for i, u := range list {
			if u.IsZero() || (i > 0 && list[i-1].Compare(u) >= 0) {
				return bad("user lists must be sorted, without repeats")
			}
		}
	}
	for _, a := range g.Admins {
		if !g.IsMember(a) {
			return bad("admin %s is not a member", a)
		}
	}
	return nil
}

func signGroupState(g GroupState, signer DeviceKeys, signerUser ident.UserID, now time.Time) (GroupState, error) {
	if signer.Signing.IsZero() || signer.Messaging.IsZero() {
		return GroupState{}, fmt.Errorf("e2ee: sign group state: empty device keys: %w", ident.ErrBadKey)
	}
	g.Members = sortUsers(g.Members)
	g.Admins = sortUsers(g.Admins)
	g.Time = linkTime(now)
	g.SignerUser = signerUser
	g.Signer = signer.ID()
	if err := g.checkShape(); err != nil {
		return GroupState{}, err
	}
	g.Sig = signer.Signing.Sign(ident.DomainGroup, g.signedBytes())
	return g, nil
}

// NewGroup makes version 1 of a new group with a random ID from rand
// (crypto/rand if nil), signed by creator, a device of creatorUser, who
// must be among admins. members and admins are sorted and deduplicated.
func NewGroup(creator DeviceKeys, creatorUser ident.UserID, members, admins []ident.UserID, now time.Time, rand io.Reader) (GroupState, error) {
	id, err := NewConversationID(rand)
	if err != nil {
		return GroupState{}, err
	}
	if !containsUser(sortUsers(admins), creatorUser) {
		return GroupState{}, fmt.Errorf("e2ee: new group: creator %s is not among the admins: %w", creatorUser, ErrNotAdmin)
	}
	return signGroupState(GroupState{ID: id, Version: 1, Members: members, Admins: admins}, creator, creatorUser, now)
}

// Next makes the state that follows g with the given members and admins,
// signed by signer, a device of signerUser, who must be an admin of g.
func (g *GroupState) Next(signer DeviceKeys, signerUser ident.UserID, members, admins []ident.UserID, now time.Time) (GroupState, error) {
	if !g.IsAdmin(signerUser) {
		return GroupState{}, fmt.Errorf("e2ee: update group %s: %s: %w", g.ID, signerUser, ErrNotAdmin)
	}
	if now.Before(g.Time) {
		now = g.Time
	}
	return signGroupState(GroupState{ID: g.ID, Version: g.Version + 1, Prev: g.Hash(), Members: members, Admins: admins}, signer, signerUser, now)
}

// verifyGroupSigner checks that g's signer device is an active device of
// signerSet, the verified device set of g.SignerUser, and its signature.
func verifyGroupSigner(g *GroupState, signerSet ident.DeviceSet) error {
	if !signerSet.User().Equal(g.SignerUser) {
		return fmt.Errorf("e2ee: group %s version %d: signer user %s, device set of %s: %w", g.ID, g.Version, g.SignerUser, signerSet.User(), ErrUnknownSender)
	}
	if signerSet.Revoked(g.Signer) {
		return fmt.Errorf("e2ee: group %s version %d: signer device %s: %w", g.ID, g.Version, g.Signer, ident.ErrRevokedDevice)
	}
	dev, ok := signerSet.Lookup(g.Signer)
	if !ok {
		return fmt.Errorf("e2ee: group %s version %d: signer device %s: %w", g.ID, g.Version, g.Signer, ErrUnknownSender)
	}
	if err := dev.Signing.Verify(ident.DomainGroup, g.signedBytes(), g.Sig); err != nil {
		return fmt.Errorf("e2ee: group %s version %d: %w", g.ID, g.Version, err)
	}
	return nil
}

// VerifyNewGroup checks version 1 of a group: its shape, that its signer
// is one of its admins, and the signature against signerSet, the verified
// device set of the signer's user.
func VerifyNewGroup(g GroupState, signerSet ident.DeviceSet) error {
	if err := g.checkShape(); err != nil {
		return err
	}
	if g.Version != 1 {
		return fmt.Errorf("e2ee: group %s: version %d is not a new group: %w", g.ID, g.Version, ErrGroupOrder)
	}
	if !g.IsAdmin(g.SignerUser) {
		return fmt.Errorf("e2ee: group %s version 1: signer %s: %w", g.ID, g.SignerUser, ErrNotAdmin)
	}
	return verifyGroupSigner(&g, signerSet)
}

// VerifyGroupUpdate checks next against prev, an already verified state:
// same group, version prev+1, Prev = prev.Hash(), time not before prev's
// (ErrGroupOrder); its signer an admin of prev (ErrNotAdmin); its signature
// against signerSet, the verified device set of the signer's user.
func VerifyGroupUpdate(prev, next GroupState, signerSet ident.DeviceSet) error {
	if err := next.checkShape(); err != nil {
		return err
	}
	switch {
	case next.ID != prev.ID:
		return fmt.Errorf("e2ee: group update: group %s follows group %s: %w", next.ID, prev.ID, ErrGroupOrder)
	case next.Version != prev.Version+1:
		return fmt.Errorf("e2ee: group %s: version %d follows version %d: %w", next.ID, next.Version, prev.Version, ErrGroupOrder)
	case next.Prev != prev.Hash():
		return fmt.Errorf("e2ee: group %s version %d: previous hash does not match version %d: %w", next.ID, next.Version, prev.Version, ErrGroupOrder)
	case next.Time.Before(prev.Time):
		return fmt.Errorf("e2ee: group %s version %d: time before version %d: %w", next.ID, next.Version, prev.Version, ErrGroupOrder)
	case !prev.IsAdmin(next.SignerUser):
		return fmt.Errorf("e2ee: group %s version %d: signer %s is not an admin of version %d: %w", next.ID, next.Version, next.SignerUser, prev.Version, ErrNotAdmin)
	}
	return verifyGroupSigner(&next, signerSet)
}

// RemovedMembers returns the members of prev that are not members of next.
func RemovedMembers(prev, next GroupState) []ident.UserID {
	var out []ident.UserID
	for _, u := range prev.Members {
		if !next.IsMember(u) {
			out = append(out, u)
		}
	}
	return out
}

// DecodeGroupState decodes a group state and checks its shape. The
// signature and its place in the group's history are checked by
// VerifyNewGroup and VerifyGroupUpdate.
func DecodeGroupState(data []byte) (GroupState, error) {
	var w groupStateWire
	if err := unmarshalCanonical("group state", data, maxGroupStateSize, &w); err != nil {
		return GroupState{}, err
	}
	bad := func(format string, a ...any) (GroupState, error) {
		return GroupState{}, fmt.Errorf("e2ee: decode group state: "+format+": %w", append(a, ident.ErrMalformed)...)
	}
	if w.Format != groupStateVersion {
		return bad("unsupported format %d", w.Format)
	}
	g := GroupState{Version: w.Version}
	if !copyExact(g.ID[:], w.ID) {
		return bad("group ID size")
	}
	if w.Prev != nil && (!copyExact(g.Prev[:], w.Prev) || g.Prev == GroupStateHash{}) {
		return bad("previous hash")
	}
	if len(w.Members) > MaxGroupMembers || len(w.Admins) > MaxGroupMembers {
		return bad("too many members")
	}
	var err error
	users := func(list [][]byte) ([]ident.UserID, error) {
		out := make([]ident.UserID, len(list))
		for i, b := range list {
			if out[i], err = ident.UserIDFromBytes(b); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	if g.Members, err = users(w.Members); err != nil {
		return bad("members: %v", err)
	}
	if g.Admins, err = users(w.Admins); err != nil {
		return bad("admins: %v", err)
	}
	if w.Time < 0 {
		return bad("negative time")
	}
	g.Time = time.UnixMilli(w.Time).UTC()
	if g.SignerUser, err = ident.UserIDFromBytes(w.SignerUser); err != nil {
		return bad("signer user: %v", err)
	}
	if g.Signer, err = ident.DeviceIDFromBytes(w.Signer); err != nil {
		return bad("signer device: %v", err)
	}
	if len(w.Sig) != ident.SignatureSize {
		return bad("signature of %d bytes", len(w.Sig))
	}
	g.Sig = w.Sig
	if err := g.checkShape(); err != nil {
		return GroupState{}, fmt.Errorf("e2ee: decode group state: %v: %w", err, ident.ErrMalformed)
	}
	return g, nil
}

// NewGroupSession starts sender's session for the group in state g and
// makes its key bundle. memberSets are the verified device sets of g's
// members, exactly one per member (ErrGroupMembers otherwise); sender,
// a device of senderUser, must be a member. Call it for a new group, after
// every membership change, and whenever RenewalPolicy.NeedsRenewal says so.
func NewGroupSession(g GroupState, sender DeviceKeys, senderUser ident.UserID, memberSets []ident.DeviceSet, now time.Time, rand io.Reader) (*SenderSession, KeyBundle, error) {
	if err := CheckGroupMembers(g, memberSets); err != nil {
		return nil, KeyBundle{}, err
	}
	if !g.IsMember(senderUser) {
		return nil, KeyBundle{}, fmt.Errorf("e2ee: group %s: sender %s is not a member: %w", g.ID, senderUser, ErrGroupMembers)
	}
	s, err := NewSenderSession(sender, senderUser, g.ID, memberSets, now, rand)
	if err != nil {
		return nil, KeyBundle{}, err
	}
	b, err := NewKeyBundle(s, sender, memberSets)
	if err != nil {
		return nil, KeyBundle{}, err
	}
	return s, b, nil
}

// CheckGroupMembers reports whether memberSets hold exactly one device set
// per member of g, and no other.
func CheckGroupMembers(g GroupState, memberSets []ident.DeviceSet) error {
	sorted := sortedSets(memberSets)
	if len(sorted) != len(memberSets) || len(sorted) != len(g.Members) {
		return fmt.Errorf("e2ee: group %s: %d device sets for %d members: %w", g.ID, len(memberSets), len(g.Members), ErrGroupMembers)
	}
	for i, s := range sorted {
		if !s.User().Equal(g.Members[i]) {
			return fmt.Errorf("e2ee: group %s: device set of %s, member %s: %w", g.ID, s.User(), g.Members[i], ErrGroupMembers)
		}
	}
	return nil
}
