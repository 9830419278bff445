package keyregistry

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
	"github.com/volo-chat/volo/p2p"
)

// Config is the [registry] section of a node's configuration.
type Config struct {
	// OpenRegistration lets clients register without an OAuth ticket. For
	// development only: the node logs a warning at start-up. The users it
	// registers carry development attestations, so it needs
	// AllowDevelopmentUsers.
	OpenRegistration bool `toml:"open_registration"`
	// AllowDevelopmentUsers accepts users from the network whose
	// registration attestation is of kind development (registered by a
	// node with open registration). For development only: the node logs a
	// warning at start-up, and a node anchoring on Cardano mainnet refuses
	// it (node.Config.Validate).
	AllowDevelopmentUsers bool `toml:"allow_development_users"`
	// NewUsersPerAttester is the budget of new users this node accepts
	// from the network per attesting node: a bucket of this many, refilled
	// at this many per NewUsersWindow. Users beyond it are neither stored
	// nor forwarded.
	NewUsersPerAttester int `toml:"new_users_per_attester"`
	// NewUsersWindow is the time in which an attesting node's budget
	// refills completely.
	NewUsersWindow config.Duration `toml:"new_users_window"`
	// NonceTTL is how long a registration nonce stays valid.
	NonceTTL config.Duration `toml:"nonce_ttl"`
	// MaxNoncesPerClient bounds the unexpired nonces of one client IP.
	MaxNoncesPerClient int `toml:"max_nonces_per_client"`
	// MaxNonces bounds the unexpired nonces of all clients together.
	MaxNonces int `toml:"max_nonces"`
	// RepublishInterval is how often every chain in the store is put in the
	// DHT again; well inside p2p.RecordLifetime.
	RepublishInterval config.Duration `toml:"republish_interval"`
	// BatchInterval is how often the accepted links are anchored on the
	// chain (when the node has a chain backend).
	BatchInterval config.Duration `toml:"batch_interval"`
	// BatchMaxLinks anchors a batch early once this many links wait, and
	// bounds the links of one batch (at most MaxBatchLinks).
	BatchMaxLinks int `toml:"batch_max_links"`
	// MirrorBytesPerPublisher bounds the batch bytes this node fetches and
	// stores from one anchor publisher per MirrorBudgetWindow (a token
	// bucket that refills over the window).
	MirrorBytesPerPublisher int64 `toml:"mirror_bytes_per_publisher"`
	// TrustedAnchorPublishers are the peer IDs whose anchors a node without
	// a chain reader (chain.backend = "none") mirrors on their signature
	// alone. A node with a chain reader checks every anchor on the chain
	// and ignores this list.
	TrustedAnchorPublishers []string `toml:"trusted_anchor_publishers"`
	// OIDC lists the OpenID Connect providers accounts can register with.
	OIDC []OIDCProvider `toml:"oidc"`
}

// OIDCProvider is one [[registry.oidc]] entry.
type OIDCProvider struct {
	// Name names the provider in URLs (/v1/auth/oidc/{name}/start).
	Name string `toml:"name"`
	// Issuer is the provider's issuer URL; discovery reads
	// Issuer + "/.well-known/openid-configuration".
	Issuer string `toml:"issuer"`
	// ClientID and ClientSecret are this node's OAuth client credentials.
	ClientID     string `toml:"client_id"`
	ClientSecret string `toml:"client_secret"`
	// Scopes asked for; "openid" is always included.
	Scopes []string `toml:"scopes"`
}

// DefaultMirrorBytesPerPublisher is the default of
// registry.mirror_bytes_per_publisher: 1 GiB a day, five times the largest
// batch (anchorproof.MaxBatchSize).
const DefaultMirrorBytesPerPublisher = 1 << 30

// DefaultConfig is the development registry: open registration and
// development users accepted, no OAuth provider.
func DefaultConfig() Config {
	return Config{
		OpenRegistration:      true,
		AllowDevelopmentUsers: true,
		NewUsersPerAttester:   1000,
		NewUsersWindow:        config.Duration(time.Hour),
		NonceTTL:              config.Duration(5 * time.Minute),
		MaxNoncesPerClient:    16,
		MaxNonces:             65536,
		RepublishInterval:     config.Duration(12 * time.Hour),
		BatchInterval:         config.Duration(5 * time.Second),
		BatchMaxLinks:         10000,

		MirrorBytesPerPublisher: DefaultMirrorBytesPerPublisher,
		TrustedAnchorPublishers: []string{},
	}
}

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	if c.OpenRegistration && !c.AllowDevelopmentUsers {
		return errors.New("registry.open_registration: the users it registers carry development attestations; set registry.allow_development_users too")
	}
	if c.NewUsersPerAttester < 1 {
		return fmt.Errorf("registry.new_users_per_attester: must be positive, got %d", c.NewUsersPerAttester)
	}
	if c.NewUsersWindow <= 0 {
		return fmt.Errorf("registry.new_users_window: must be positive, got %s", c.NewUsersWindow)
	}
	if c.NonceTTL <= 0 {
		return fmt.Errorf("registry.nonce_ttl: must be positive, got %s", c.NonceTTL)
	}
	if c.MaxNoncesPerClient <= 0 {
		return fmt.Errorf("registry.max_nonces_per_client: must be positive, got %d", c.MaxNoncesPerClient)
	}
	if c.MaxNonces < c.MaxNoncesPerClient {
		return fmt.Errorf("registry.max_nonces: %d is less than max_nonces_per_client %d", c.MaxNonces, c.MaxNoncesPerClient)
	}
	if c.RepublishInterval <= 0 || c.RepublishInterval.Std() > p2p.RecordLifetime/2 {
		return fmt.Errorf("registry.republish_interval: %s is not in (0, %s]", c.RepublishInterval, p2p.RecordLifetime/2)
	}
	if c.BatchInterval <= 0 {
		return fmt.Errorf("registry.batch_interval: must be positive, got %s", c.BatchInterval)
	}
	if c.BatchMaxLinks < 1 || c.BatchMaxLinks > anchorproof.MaxBatchLinks {
		return fmt.Errorf("registry.batch_max_links: %d is not in [1, %d]", c.BatchMaxLinks, anchorproof.MaxBatchLinks)
	}
	if c.MirrorBytesPerPublisher <= 0 {
		return fmt.Errorf("registry.mirror_bytes_per_publisher: must be positive, got %d", c.MirrorBytesPerPublisher)
	}
	for i, id := range c.TrustedAnchorPublishers {
		if _, err := peer.Decode(id); err != nil {
			return fmt.Errorf("registry.trusted_anchor_publishers[%d]: %q is not a peer ID: %w", i, id, err)
		}
	}
	var names []string
	for i, p := range c.OIDC {
		field := fmt.Sprintf("registry.oidc[%d]", i)
		if !providerName.MatchString(p.Name) {
			return fmt.Errorf("%s.name: %q is not 1-32 characters of [a-z0-9_-]", field, p.Name)
		}
		if slices.Contains(names, p.Name) {
			return fmt.Errorf("%s.name: %q appears twice", field, p.Name)
		}
		names = append(names, p.Name)
		u, err := url.Parse(p.Issuer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s.issuer: %q is not an http(s) URL", field, p.Issuer)
		}
		if p.ClientID == "" {
			return fmt.Errorf("%s.client_id: must not be empty", field)
		}
	}
	return nil
}
