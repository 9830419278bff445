package wire

import "time"

// The JSON bodies of the node's HTTP API (docs/api.md): the node's api
// package writes them and the client SDK reads them, from these types
// only. Byte fields are base64 in JSON, as encoding/json writes []byte.

// Error codes of the HTTP API, the "code" of an ErrorResponse.
const (
	CodeBadRequest          = "bad_request"
	CodeTooLarge            = "too_large"
	CodeNotFound            = "not_found"
	CodeInternal            = "internal"
	CodeCancelled           = "cancelled"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeUnhealthy           = "unhealthy"
	CodeTooManyConnections  = "too_many_connections"
	CodeTooManyNonces       = "too_many_nonces"
	CodeBadNonce            = "bad_nonce"
	CodeBadTicket           = "bad_ticket"
	CodeInvalidProof        = "invalid_proof"
	CodeInvalidLink         = "invalid_link"
	CodeStaleChain          = "stale_chain"
	CodeAlreadyRegistered   = "already_registered"
	CodeUserNotFound        = "user_not_found"
	CodeBadUserID           = "bad_user_id"
	CodeUnknownProvider     = "unknown_provider"
	CodeBadLoginID          = "bad_login_id"
	CodeBadLoginSecret      = "bad_login_secret"
	CodeLoginInUse          = "login_in_use"
	CodeTooManyLogins       = "too_many_logins"
	CodeProviderUnavailable = "provider_unavailable"
	CodeBadState            = "bad_state"
	CodeOIDCExchange        = "oidc_exchange_failed"
	CodeBadIDToken          = "bad_id_token"
	CodeMailboxFull         = "mailbox_full"
	CodeTooManyMailboxes    = "too_many_mailboxes"
	CodeBadRendezvousID     = "bad_rendezvous_id"
	CodeBatchNotFound       = "batch_not_found"
	CodeBadCID              = "bad_cid"
	CodeUnauthenticated     = "unauthenticated"
	CodeQuotaExceeded       = "quota_exceeded"
	CodeBadChunk            = "bad_chunk"
	CodeBadPointer          = "bad_pointer"
	CodeStalePointer        = "stale_pointer"
	CodeNoStorage           = "no_storage"
	CodeNoQuorum            = "no_quorum"
	CodeUnavailable         = "unavailable"
)

// ErrorResponse is the body of every error answer:
// {"error": {"code": "...", "message": "..."}}.
type ErrorResponse struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the error of an ErrorResponse: a code callers branch on
// and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// NodeInfo is the body of GET /v1/node.
type NodeInfo struct {
	PeerID           string   `json:"peer_id"`
	Addrs            []string `json:"addrs"`
	Roles            []string `json:"roles"`
	Version          string   `json:"version"`
	Peers            int      `json:"peers"`
	RoutingTableSize int      `json:"routing_table_size"`
}

// Provider is an OpenID Connect provider a node accepts registrations
// from.
type Provider struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer"`
}

// ProvidersResponse is the body of GET /v1/auth/providers.
type ProvidersResponse struct {
	Providers        []Provider `json:"providers"`
	OpenRegistration bool       `json:"open_registration"`
}

// NonceResponse is the body of POST /v1/auth/nonce.
type NonceResponse struct {
	Nonce     []byte    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TicketRequest is the body of POST /v1/auth/tickets: the login secret
// whose login ID (LoginID) the login was started with.
type TicketRequest struct {
	LoginSecret string `json:"login_secret"`
}

// TicketResponse is the body of POST /v1/auth/tickets once the login
// completed (200).
type TicketResponse struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TicketPending is the body of POST /v1/auth/tickets while the
// login is not complete (202): {"status": "pending"}.
type TicketPending struct {
	Status string `json:"status"`
}

// RegisterRequest is the body of POST /v1/users.
type RegisterRequest struct {
	Genesis []byte `json:"genesis"`
	Proof   []byte `json:"proof"`
	Ticket  string `json:"ticket,omitempty"`
}

// ChainVersion is the answer to a change of a chain (POST /v1/users and
// POST /v1/users/{user_id}/links).
type ChainVersion struct {
	UserID  string `json:"user_id"`
	Version uint64 `json:"version"`
}

// UserResponse is the body of GET /v1/users/{user_id}.
type UserResponse struct {
	UserID  string   `json:"user_id"`
	Version uint64   `json:"version"`
	Links   [][]byte `json:"links"`
	// Proofs holds the anchor proof of each link (Proofs[i] for Links[i]),
	// null for a link not anchored yet.
	Proofs []*AnchorProof `json:"proofs"`
	// Fork is the known fork of the chain, absent when the node knows none.
	Fork *ChainFork `json:"fork,omitempty"`
}

// ChainFork is a fork of a user's chain a node knows: Links above are the
// branch the fork rule kept, Other the head of the branch it did not.
type ChainFork struct {
	At    uint64   `json:"at"`   // sequence number of the first link that differs
	Rule  string   `json:"rule"` // the step that decided: recovery-key, anchored-first, smaller-link-id
	Kept  ForkHead `json:"kept"`
	Other ForkHead `json:"other"`
}

// ForkHead is the head of one branch of a fork: its version (the sequence
// number of its last link) and the ID of its last link.
type ForkHead struct {
	Version uint64 `json:"version"`
	Link    string `json:"link"`
}

// AnchorProof is one entry of UserResponse.Proofs: the proof (the CBOR a
// verifier checks, docs/anchoring.md) and, for people reading the JSON,
// where it says the link was anchored. Verifiers trust only Proof.
type AnchorProof struct {
	Proof     []byte `json:"proof"`
	TxID      string `json:"tx_id"`
	Block     string `json:"block"` // slot.hash
	BlockNo   uint64 `json:"block_no"`
	BatchCID  string `json:"batch_cid"`
	LeafIndex uint64 `json:"leaf_index"`
	TreeSize  uint64 `json:"tree_size"`
}

// AppendLinkRequest is the body of POST /v1/users/{user_id}/links.
type AppendLinkRequest struct {
	Link []byte `json:"link"`
}

// RendezvousPosted is the answer of POST /v1/rendezvous/{rid}: the
// message's sequence number in the mailbox.
type RendezvousPosted struct {
	Seq uint64 `json:"seq"`
}

// RendezvousMessages is the body of GET /v1/rendezvous/{rid}.
type RendezvousMessages struct {
	Messages []RendezvousMessage `json:"messages"`
}

// RendezvousMessage is one sealed linking message of a mailbox.
type RendezvousMessage struct {
	Seq  uint64 `json:"seq"`
	Data []byte `json:"data"`
}

// BackupCheckRequest is the body of POST /v1/backup/check. Both fields
// are required: the node refuses a body without one of them.
type BackupCheckRequest struct {
	Bytes  *uint64 `json:"bytes"`
	Chunks *uint64 `json:"chunks"`
}

// BackupQuota is the answer of POST /v1/backup/check: the user's quota
// and what the user stores already.
type BackupQuota struct {
	QuotaBytes  uint64 `json:"quota_bytes"`
	QuotaChunks uint64 `json:"quota_chunks"`
	UsedBytes   uint64 `json:"used_bytes"`
	UsedChunks  uint64 `json:"used_chunks"`
}

// ChunkStored is the answer of PUT /v1/backup/chunks/{cid}: the number of
// storage nodes that stored the chunk.
type ChunkStored struct {
	CID      string `json:"cid"`
	Replicas int    `json:"replicas"`
}

// ChunkReplicas is the answer of GET /v1/backup/chunks/{cid}/replicas:
// the storage nodes (peer IDs) that hold the chunk.
type ChunkReplicas struct {
	CID      string   `json:"cid"`
	Holders  []string `json:"holders"`
	Replicas int      `json:"replicas"`
}
