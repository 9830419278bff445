package e2ee

import "github.com/volo-chat/volo/ident"

// The identities, public keys and chain types moved to package ident; these
// names keep the packages that still spell them e2ee.X building while they
// move over, and go once none does.

type (
	ChainError      = ident.ChainError
	ChainHead       = ident.ChainHead
	ChainRelation   = ident.ChainRelation
	DeviceID        = ident.DeviceID
	DevicePublic    = ident.DevicePublic
	DeviceSet       = ident.DeviceSet
	Link            = ident.Link
	LinkID          = ident.LinkID
	MessagingPublic = ident.MessagingPublic
	RendezvousID    = ident.RendezvousID
	SigningPublic   = ident.SigningPublic
	UserID          = ident.UserID
)

const (
	ChainExtends             = ident.ChainExtends
	ChainForked              = ident.ChainForked
	ChainRollback            = ident.ChainRollback
	ChainSame                = ident.ChainSame
	DomainBackup             = ident.DomainBackup
	DomainLink               = ident.DomainLink
	LinkAddDevice            = ident.LinkAddDevice
	LinkGenesis              = ident.LinkGenesis
	LinkRevokeDevice         = ident.LinkRevokeDevice
	MaxChainLinks            = ident.MaxChainLinks
	MaxLinkSize              = ident.MaxLinkSize
	MaxNestedLevels          = ident.MaxNestedLevels
	MaxRegistrationNonceSize = ident.MaxRegistrationNonceSize
	MinRegistrationNonceSize = ident.MinRegistrationNonceSize
	SignatureSize            = ident.SignatureSize
)

var (
	DecodeAddDeviceRequest    = ident.DecodeAddDeviceRequest
	DecodeChain               = ident.DecodeChain
	DecodeChainHead           = ident.DecodeChainHead
	DecodeDevicePublic        = ident.DecodeDevicePublic
	DecodeLink                = ident.DecodeLink
	DecodeRegistrationProof   = ident.DecodeRegistrationProof
	DeviceIDFromBytes         = ident.DeviceIDFromBytes
	ErrUserIDMismatch         = ident.ErrUserIDMismatch
	ParseDeviceID             = ident.ParseDeviceID
	ParseRendezvousID         = ident.ParseRendezvousID
	ParseUserID               = ident.ParseUserID
	Relate                    = ident.Relate
	UserIDFromBytes           = ident.UserIDFromBytes
	VerifyChain               = ident.VerifyChain
	VerifyRegistrationGenesis = ident.VerifyRegistrationGenesis
)
