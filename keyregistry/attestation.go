package keyregistry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/crypto"
	pb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Signature domains of the registration attestation.
const (
	// DomainAttest is the domain of a node's signature over an
	// attestation: the node signs DomainAttest || 0x00 || the canonical
	// encoding of the statement, with its libp2p peer key.
	DomainAttest = "volo/v1/attest"
	// DomainAccount is the domain of the account hash of an OIDC
	// attestation (AccountHash).
	DomainAccount = "volo/v1/account"
)

// Limits of an attestation.
const (
	// AccountHashSize is the size of an OIDC attestation's account hash.
	AccountHashSize = sha256.Size
	// MaxPeerIDSize bounds the peer ID an attestation names. The peer ID
	// of an Ed25519 key, the only kind accepted, is 38 bytes.
	MaxPeerIDSize = 64
	// MaxAttestationSize bounds an encoded attestation.
	MaxAttestationSize = 256
	// maxAttestationMillis is the latest representable attestation time
	// (year 9999), as for every Volo record time.
	maxAttestationMillis = 253402300799999
)

// AttestationKind says how the registering node checked the person who
// registered.
type AttestationKind uint8

const (
	// KindOIDC: the person logged in with a configured OpenID Connect
	// provider; the attestation carries the account's hash.
	KindOIDC AttestationKind = 1
	// KindDevelopment: the node registers without a login (open
	// registration). Accepted only by nodes that allow development users.
	KindDevelopment AttestationKind = 2
)

func (k AttestationKind) String() string {
	switch k {
	case KindOIDC:
		return "oidc"
	case KindDevelopment:
		return "development"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

var (
	// ErrBadAttestation reports an attestation that does not decode, is
	// not canonical, or whose signature does not verify against the peer
	// ID it names.
	ErrBadAttestation = errors.New("keyregistry: bad registration attestation")
	// ErrUnattested reports a user record without an attestation.
	ErrUnattested = errors.New("keyregistry: user record has no registration attestation")
	// ErrDevelopmentUser reports a development attestation on a node
	// that does not allow development users.
	ErrDevelopmentUser = errors.New("keyregistry: development users are not accepted by this node")
	// ErrAttestBudget reports a new user over the budget of its attesting
	// node (Config.NewUsersPerAttester).
	ErrAttestBudget = errors.New("keyregistry: attesting node is over its budget of new users")
)

// Attestation is a node's signed statement that it registered a user:
// who (User), which node (Node, whose peer key signed it), how the person
// was checked (Kind, and for OIDC the account's hash) and when.
type Attestation struct {
	User ident.UserID
	Node peer.ID
	Kind AttestationKind
	// Account is AccountHash of the OIDC account (KindOIDC); empty for
	// KindDevelopment.
	Account   []byte
	Time      time.Time
	Signature []byte
}

// wireStatement is the signed part: {1: user ID (bstr 36), 2: peer ID
// (bstr), 3: kind (uint), ? 4: account hash (bstr 32), 5: time (uint, Unix
// milliseconds)}.
type wireStatement struct {
	User    ident.UserID `cbor:"1,keyasint"`
	Node    []byte       `cbor:"2,keyasint"`
	Kind    uint8        `cbor:"3,keyasint"`
	Account []byte       `cbor:"4,keyasint,omitempty"`
	Time    uint64       `cbor:"5,keyasint"`
}

// wireAttestation is {1: statement, 2: signature (bstr 64)}.
type wireAttestation struct {
	Statement wireStatement `cbor:"1,keyasint"`
	Signature []byte        `cbor:"2,keyasint"`
}

var attDec cbor.DecMode

func init() {
	var err error
	attDec, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// AccountHash is the account hash of an OIDC attestation: SHA-256 of
// DomainAccount || 0x00 || user ID (36 bytes) || issuer || 0x00 ||
// subject. Salted by the user ID, it does not show which account
// registered, nor that two users share a provider account.
func AccountHash(user ident.UserID, a Account) []byte {
	h := sha256.New()
	h.Write(ident.DomainMessage(DomainAccount, user.Bytes()))
	h.Write([]byte(a.Issuer))
	h.Write([]byte{0})
	h.Write([]byte(a.Subject))
	return h.Sum(nil)
}

// Attest signs an attestation with key, a node's Ed25519 peer key: user
// registered through the node at t, checked as kind says (account is
// AccountHash for KindOIDC, nil for KindDevelopment).
func Attest(key crypto.PrivKey, user ident.UserID, kind AttestationKind, account []byte, t time.Time) (Attestation, error) {
	node, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return Attestation{}, fmt.Errorf("keyregistry: attest: %w", err)
	}
	a := Attestation{User: user, Node: node, Kind: kind, Account: account, Time: time.UnixMilli(t.UnixMilli()).UTC()}
	if err := a.checkStatement(); err != nil {
		return Attestation{}, err
	}
	if a.Signature, err = key.Sign(ident.DomainMessage(DomainAttest, a.signedBytes())); err != nil {
		return Attestation{}, fmt.Errorf("keyregistry: attest: %w", err)
	}
	return a, nil
}

func (a Attestation) statement() wireStatement {
	return wireStatement{User: a.User, Node: []byte(a.Node), Kind: uint8(a.Kind), Account: a.Account, Time: uint64(a.Time.UnixMilli())}
}

// signedBytes is the canonical encoding of the statement.
func (a Attestation) signedBytes() []byte {
	b, err := recEnc.Marshal(a.statement())
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode attestation: %v", err)) // bytes and integers always encode
	}
	return b
}

// checkStatement checks the statement's shape.
func (a Attestation) checkStatement() error {
	switch {
	case a.User.IsZero():
		return fmt.Errorf("%w: no user", ErrBadAttestation)
	case len(a.Node) == 0 || len(a.Node) > MaxPeerIDSize:
		return fmt.Errorf("%w: peer ID of %d bytes (1 to %d)", ErrBadAttestation, len(a.Node), MaxPeerIDSize)
	case a.Time.UnixMilli() <= 0 || a.Time.UnixMilli() > maxAttestationMillis:
		return fmt.Errorf("%w: time %s out of range", ErrBadAttestation, a.Time)
	}
	switch a.Kind {
	case KindOIDC:
		if len(a.Account) != AccountHashSize {
			return fmt.Errorf("%w: oidc account hash of %d bytes, want %d", ErrBadAttestation, len(a.Account), AccountHashSize)
		}
	case KindDevelopment:
		if len(a.Account) != 0 {
			return fmt.Errorf("%w: development attestation with an account hash", ErrBadAttestation)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrBadAttestation, a.Kind)
	}
	return nil
}

// Encode returns the attestation's canonical encoding.
func (a Attestation) Encode() []byte {
	b, err := recEnc.Marshal(wireAttestation{Statement: a.statement(), Signature: a.Signature})
	if err != nil {
		panic(fmt.Sprintf("keyregistry: encode attestation: %v", err))
	}
	return b
}

// DecodeAttestation decodes an attestation, checks that it is canonical
// and well formed, and verifies its signature against the peer ID it
// names, which must hold an Ed25519 public key.
func DecodeAttestation(data []byte) (Attestation, error) {
	if len(data) > MaxAttestationSize {
		return Attestation{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadAttestation, len(data), MaxAttestationSize)
	}
	var w wireAttestation
	if err := attDec.Unmarshal(data, &w); err != nil {
		return Attestation{}, fmt.Errorf("%w: %v", ErrBadAttestation, err)
	}
	st := w.Statement
	if st.Time > maxAttestationMillis {
		return Attestation{}, fmt.Errorf("%w: time out of range", ErrBadAttestation)
	}
	a := Attestation{
		User: st.User, Node: peer.ID(st.Node), Kind: AttestationKind(st.Kind), Account: st.Account,
		Time: time.UnixMilli(int64(st.Time)).UTC(), Signature: w.Signature,
	}
	if err := a.checkStatement(); err != nil {
		return Attestation{}, err
	}
	if !bytes.Equal(a.Encode(), data) {
		return Attestation{}, fmt.Errorf("%w: not canonical", ErrBadAttestation)
	}
	if err := a.verify(); err != nil {
		return Attestation{}, err
	}
	return a, nil
}

// verify checks the signature against the Ed25519 key in the peer ID.
func (a Attestation) verify() error {
	if len(a.Signature) != ident.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrBadAttestation, len(a.Signature))
	}
	id, err := peer.IDFromBytes([]byte(a.Node))
	if err != nil {
		return fmt.Errorf("%w: not a peer ID: %v", ErrBadAttestation, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: peer ID %s does not hold its public key: %v", ErrBadAttestation, id, err)
	}
	if pub.Type() != pb.KeyType_Ed25519 {
		return fmt.Errorf("%w: peer ID %s holds a %s key, want Ed25519", ErrBadAttestation, id, pub.Type())
	}
	ok, err := pub.Verify(ident.DomainMessage(DomainAttest, a.signedBytes()), a.Signature)
	if err != nil || !ok {
		return fmt.Errorf("%w: signature by %s does not verify", ErrBadAttestation, id)
	}
	return nil
}
