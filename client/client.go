// Package client is Volo's client SDK: it talks to a node's API and keeps a
// device's keys (encrypted with a passphrase) and public state in a home directory.
package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// Version is the client software's version; release builds set it with
// -ldflags "-X github.com/volo-chat/volo/client.Version=…".
var Version = "0.1.0-dev"

const (
	// LoginSecretSize is the number of random bytes of an OAuth login
	// secret (256 bits; docs/api.md asks for at least 128).
	LoginSecretSize = 32
	// LoginTimeout bounds the wait for the person to log in with the
	// provider; the node's login state lives 10 minutes (docs/api.md).
	LoginTimeout = 10 * time.Minute
)

// Errors of client operations. Errors of the node are *APIError; errors of
// verification wrap the e2ee sentinels.
var (
	// ErrUnknownProvider: the node has no OAuth provider of that name.
	ErrUnknownProvider = errors.New("client: unknown OAuth provider")
	// ErrProviderRequired: the node does not register without an OAuth login.
	ErrProviderRequired = errors.New("client: this node registers only through an OAuth provider")
	// ErrNodeMisbehaved: the node answered something a correct node never
	// does (another user ID than the genesis link's, a chain that does not
	// hold the link it accepted, ...).
	ErrNodeMisbehaved = errors.New("client: the node answered inconsistently")
	// ErrChainRollback: the node served an older chain than this device verified before.
	ErrChainRollback = errors.New("client: node served an older chain than the one verified before")
	// ErrNotRecoveryKey: the recovery key given is not the one the
	// user's genesis link names (or it names none).
	ErrNotRecoveryKey = errors.New("client: not this user's recovery key")
	// ErrChainForked: the node served a chain that contradicts the one verified before.
	ErrChainForked = errors.New("client: node served a chain that contradicts the one verified before")
	// ErrDeviceRevoked: this device was revoked from its user's chain.
	ErrDeviceRevoked = errors.New("client: this device has been revoked")
	// ErrUnknownDevice: the device is not an active device of the user.
	ErrUnknownDevice = errors.New("client: no such active device")
	// ErrBadLinkReply: the existing device sent a link that does not add
	// exactly this device at the head it signed its request for.
	ErrBadLinkReply = errors.New("client: linking reply does not add this device at the agreed head")
)

// Options configure a Client.
type Options struct {
	// Home is the home directory (required).
	Home string
	// Node is the base URL of the node's API (required).
	Node string
	// HTTPClient sends every request (http.DefaultClient if nil).
	HTTPClient *http.Client
	// KDF is the Argon2id cost of encrypting new device keys
	// (e2ee.DefaultBackupParams if zero).
	KDF e2ee.BackupParams
	// Rand is the source of keys, linking codes and login IDs
	// (crypto/rand if nil).
	Rand io.Reader
	// Now is the clock of new links (time.Now if nil).
	Now func() time.Time
}

// Client is one device: its home and the node it talks to. Run one
// operation at a time per home: the home's files are replaced atomically,
// but two operations at once may save each other's older chain.
type Client struct {
	home *Home
	api  *API
	hc   *http.Client
	rand io.Reader
	now  func() time.Time
}

// New opens the home directory (without creating it: only Register and
// LinkJoin do, when they make a device) and prepares to talk to the node.
// It does not read the keys (operations that sign take the passphrase).
func New(opts Options) (*Client, error) {
	home, err := OpenHome(opts.Home, opts.KDF)
	if err != nil {
		return nil, err
	}
	api, err := NewAPI(opts.Node, opts.HTTPClient)
	if err != nil {
		return nil, err
	}
	c := &Client{home: home, api: api, hc: opts.HTTPClient, rand: opts.Rand, now: opts.Now}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Home returns the client's home directory.
func (c *Client) Home() *Home { return c.home }

// API returns the client of the node.
func (c *Client) API() *API { return c.api }

// Identity names a device and its user.
type Identity struct {
	User   ident.UserID
	Device ident.DeviceID
	Node   string
}

// Device is one active device of a verified chain.
type Device struct {
	ID ident.DeviceID
	// SigningKey and MessagingKey are fingerprints of the public keys
	// (ident.SigningPublic.String and ident.MessagingPublic.String).
	SigningKey   string
	MessagingKey string
	// Added is the time of the link that named the device (as its signer stated it).
	Added time.Time
	// Self marks the device of this client.
	Self bool
}

// UserInfo is a user's verified chain, summarised.
type UserInfo struct {
	User    ident.UserID
	Version uint64
	Devices []Device
	// Revoked lists the devices the chain revoked.
	Revoked []ident.DeviceID
}

// LoginPage is the page a person logs in on to register: URL is where the
// browser goes; Code is the confirmation code the node's page shows at the
// end of the login, to be shown to the person beside it so they can check
// that the login they finish is the one this client started.
type LoginPage struct {
	URL  string
	Code string
}

// Register creates a new user with this (new) device as its first device
// and saves the device in the home, its keys encrypted with passphrase.
// With provider "" the node must allow open registration; otherwise the
// client picks a login secret, calls openBrowser with the node's login page
// (its URL, which carries only the secret's login ID, and the confirmation
// code the browser will show) and waits for the node to hand out the
// registration ticket, which it collects with the secret. When Register
// fails, the home holds nothing it made: no file, and no directory it
// created.
func (c *Client) Register(ctx context.Context, provider string, openBrowser func(LoginPage) error, passphrase []byte) (Identity, error) {
	return c.register(ctx, provider, openBrowser, passphrase, ident.SigningPublic{})
}

// RegisterWithRecovery is Register with a new recovery key, whose public
// key the genesis link names. The key is returned to be shown to the user
// once (RecoveryKey.Text) and is kept nowhere: with it, Recover revokes a
// stolen device, and its links win a fork of the user's chain.
func (c *Client) RegisterWithRecovery(ctx context.Context, provider string, openBrowser func(LoginPage) error, passphrase []byte) (Identity, e2ee.RecoveryKey, error) {
	rk, err := e2ee.GenerateRecoveryKey(c.rand)
	if err != nil {
		return Identity{}, e2ee.RecoveryKey{}, fmt.Errorf("client: %w", err)
	}
	id, err := c.register(ctx, provider, openBrowser, passphrase, rk.Public())
	if err != nil {
		return Identity{}, e2ee.RecoveryKey{}, err
	}
	return id, rk, nil
}

func (c *Client) register(ctx context.Context, provider string, openBrowser func(LoginPage) error, passphrase []byte, recovery ident.SigningPublic) (Identity, error) {
	if len(passphrase) == 0 {
		return Identity{}, ErrEmptyPassphrase
	}
	if has, err := c.home.HasDevice(); err != nil {
		return Identity{}, err
	} else if has {
		return Identity{}, fmt.Errorf("%w: %s", ErrHomeInUse, c.home.Dir())
	}
	provs, err := c.api.Providers(ctx)
	if err != nil {
		return Identity{}, err
	}
	var ticket string
	if provider == "" {
		if !provs.OpenRegistration {
			return Identity{}, fmt.Errorf("%w (providers: %s)", ErrProviderRequired, providerNames(provs))
		}
	} else {
		if !slices.ContainsFunc(provs.Providers, func(p wire.Provider) bool { return p.Name == provider }) {
			return Identity{}, fmt.Errorf("%w %q (the node offers: %s)", ErrUnknownProvider, provider, providerNames(provs))
		}
		if openBrowser == nil {
			return Identity{}, errors.New("client: register with a provider needs a way to open the login page")
		}
		raw := make([]byte, LoginSecretSize)
		if _, err := io.ReadFull(c.rand, raw); err != nil {
			return Identity{}, fmt.Errorf("client: login secret: %w", err)
		}
		secret := base64.RawURLEncoding.EncodeToString(raw)
		id := wire.LoginID(secret)
		if err := openBrowser(LoginPage{URL: c.api.LoginURL(provider, id), Code: wire.LoginCode(id)}); err != nil {
			return Identity{}, fmt.Errorf("client: open the login page: %w", err)
		}
		wctx, cancel := context.WithTimeout(ctx, LoginTimeout)
		ticket, err = c.api.WaitTicket(wctx, secret)
		cancel()
		if err != nil {
			return Identity{}, err
		}
	}

	keys, err := e2ee.GenerateDeviceKeys(c.rand)
	if err != nil {
		return Identity{}, fmt.Errorf("client: device keys: %w", err)
	}
	nonce, err := c.api.Nonce(ctx)
	if err != nil {
		return Identity{}, err
	}
	proof := e2ee.SignRegistration(keys, nonce)
	genesis, err := e2ee.NewGenesisWithRecovery(keys, recovery, c.now())
	if err != nil {
		return Identity{}, fmt.Errorf("client: genesis link: %w", err)
	}
	// The home first: a home that cannot be written fails here, before
	// the node registers a user whose keys would be lost.
	id := Identity{User: genesis.UserID(), Device: keys.ID(), Node: c.api.URL()}
	st := State{User: id.User.String(), Device: id.Device.String(), Node: id.Node, Chain: [][]byte{genesis.Encode()}}
	undo, err := c.home.create(keys, passphrase, st)
	if err != nil {
		return Identity{}, err
	}
	user, err := c.api.Register(ctx, genesis.Encode(), proof.Encode(), ticket)
	if err == nil && !user.Equal(genesis.UserID()) {
		err = fmt.Errorf("%w: registered user %s, the genesis link is %s", ErrNodeMisbehaved, user, genesis.UserID())
	}
	if err != nil {
		undo()
		return Identity{}, err
	}
	return id, nil
}

func providerNames(p wire.ProvidersResponse) string {
	if len(p.Providers) == 0 {
		return "none"
	}
	s := ""
	for i, pr := range p.Providers {
		if i > 0 {
			s += ", "
		}
		s += pr.Name
	}
	return s
}

// Whoami returns the identity saved in the home; it needs neither the
// passphrase nor the node.
func (c *Client) Whoami() (Identity, State, error) {
	st, err := c.home.State()
	if err != nil {
		return Identity{}, State{}, err
	}
	id, err := identityOf(st)
	return id, st, err
}

func identityOf(st State) (Identity, error) {
	user, err := ident.ParseUserID(st.User)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %s: user: %w", ErrCorruptHome, StateFile, err)
	}
	dev, err := ident.ParseDeviceID(st.Device)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %s: device: %w", ErrCorruptHome, StateFile, err)
	}
	return Identity{User: user, Device: dev, Node: st.Node}, nil
}

// Lookup fetches a user's chain from the node, verifies it from the user ID
// alone and returns its devices. For this client's own user the chain must
// also extend the one verified before (ErrChainRollback, ErrChainForked).
func (c *Client) Lookup(ctx context.Context, user ident.UserID) (UserInfo, error) {
	set, links, err := c.fetchChain(ctx, c.api, user)
	if err != nil {
		return UserInfo{}, err
	}
	var self ident.DeviceID
	if st, err := c.home.State(); err == nil && st.User == user.String() {
		if _, err := c.acceptOwnChain(st, set, links); err != nil {
			return UserInfo{}, err
		}
		self, _ = ident.ParseDeviceID(st.Device)
	}
	return summarise(set, links, self), nil
}

// Devices returns the verified devices of this client's own user, fetched
// from the node and checked against the chain verified before.
func (c *Client) Devices(ctx context.Context) (UserInfo, error) {
	st, err := c.home.State()
	if err != nil {
		return UserInfo{}, err
	}
	id, err := identityOf(st)
	if err != nil {
		return UserInfo{}, err
	}
	return c.Lookup(ctx, id.User)
}

// fetchChain gets and verifies the chain of user from api.
func (c *Client) fetchChain(ctx context.Context, api *API, user ident.UserID) (ident.DeviceSet, []ident.Link, error) {
	encoded, err := api.Chain(ctx, user)
	if err != nil {
		return ident.DeviceSet{}, nil, err
	}
	set, links, err := ident.DecodeChain(user, encoded)
	if err != nil {
		return ident.DeviceSet{}, nil, fmt.Errorf("client: chain of %s from %s does not verify: %w", user, api.URL(), err)
	}
	return set, links, nil
}

// savedChain verifies the chain saved in st.
func savedChain(st State) (ident.DeviceSet, []ident.Link, error) {
	id, err := identityOf(st)
	if err != nil {
		return ident.DeviceSet{}, nil, err
	}
	set, links, err := ident.DecodeChain(id.User, st.Chain)
	if err != nil {
		return ident.DeviceSet{}, nil, fmt.Errorf("%w: %s: saved chain: %w", ErrCorruptHome, StateFile, err)
	}
	return set, links, nil
}

// acceptOwnChain checks that the verified chain fetched extends (or equals)
// the one saved, and saves it. It returns the saved state.
func (c *Client) acceptOwnChain(st State, set ident.DeviceSet, links []ident.Link) (State, error) {
	known, _, err := savedChain(st)
	if err != nil {
		return st, err
	}
	switch r := ident.Relate(known, set); r {
	case ident.ChainSame:
		return st, nil
	case ident.ChainExtends:
		st.Chain = encodeLinks(links)
		return st, c.home.SaveState(st)
	default:
		return st, conflict(known, set)
	}
}

func encodeLinks(links []ident.Link) [][]byte {
	out := make([][]byte, len(links))
	for i, l := range links {
		out[i] = l.Encode()
	}
	return out
}

func summarise(set ident.DeviceSet, links []ident.Link, self ident.DeviceID) UserInfo {
	added := map[ident.DeviceID]time.Time{}
	var revoked []ident.DeviceID
	for _, l := range links {
		switch l.Kind {
		case ident.LinkGenesis, ident.LinkAddDevice:
			added[l.Device.ID()] = l.Time
		case ident.LinkRevokeDevice:
			revoked = append(revoked, l.Revoked)
		}
	}
	info := UserInfo{User: set.User(), Version: set.Version(), Revoked: revoked}
	for _, d := range set.Devices() {
		id := d.ID()
		info.Devices = append(info.Devices, Device{
			ID:           id,
			SigningKey:   d.Signing.String(),
			MessagingKey: d.Messaging.String(),
			Added:        added[id],
			Self:         !self.IsZero() && id.Equal(self),
		})
	}
	return info
}

// ownChain loads the keys and the freshest verified chain of this device's
// user (checked against the saved one), and checks the device is active.
func (c *Client) ownChain(ctx context.Context, passphrase []byte) (e2ee.DeviceKeys, State, ident.DeviceSet, error) {
	st, err := c.home.State()
	if err != nil {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, err
	}
	keys, err := c.home.Keys(passphrase)
	if err != nil {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, err
	}
	id, err := identityOf(st)
	if err != nil {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, err
	}
	set, links, err := c.fetchChain(ctx, c.api, id.User)
	if err != nil {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, err
	}
	if st, err = c.acceptOwnChain(st, set, links); err != nil {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, err
	}
	if _, ok := set.Lookup(id.Device); !ok {
		return e2ee.DeviceKeys{}, State{}, ident.DeviceSet{}, fmt.Errorf("%w: %s", ErrDeviceRevoked, id.Device)
	}
	return keys, st, set, nil
}

// Revoke removes another device of this user from the chain, signed by this
// device. If the node's chain moved on meanwhile (stale_chain), it fetches
// the chain again and re-signs, up to MaxStaleRetries times. It returns the
// new chain's version.
func (c *Client) Revoke(ctx context.Context, target ident.DeviceID, passphrase []byte) (uint64, error) {
	for attempt := 0; ; attempt++ {
		v, err := c.revokeOnce(ctx, target, passphrase)
		if err == nil || !IsCode(err, CodeStaleChain) || attempt == MaxStaleRetries {
			return v, err
		}
	}
}

// MaxStaleRetries bounds how often Revoke re-signs after a stale_chain answer.
const MaxStaleRetries = 3

func (c *Client) revokeOnce(ctx context.Context, target ident.DeviceID, passphrase []byte) (uint64, error) {
	keys, st, set, err := c.ownChain(ctx, passphrase)
	if err != nil {
		return 0, err
	}
	if _, ok := set.Lookup(target); !ok {
		return 0, fmt.Errorf("%w: %s", ErrUnknownDevice, target)
	}
	link, err := e2ee.NewRevokeDevice(set, keys, target, c.now())
	if err != nil {
		return 0, fmt.Errorf("client: revoke %s: %w", target, err)
	}
	next, err := set.Apply(link)
	if err != nil {
		return 0, fmt.Errorf("client: revoke %s: %w", target, err)
	}
	if err := c.api.AppendLink(ctx, set.User(), link.Encode()); err != nil {
		return 0, err
	}
	st.Chain = append(st.Chain, link.Encode())
	if err := c.home.SaveState(st); err != nil {
		return 0, err
	}
	return next.Version(), nil
}

// Recover revokes target, a device of this user (a stolen one), with the
// user's recovery key: no passphrase and no active device are needed. The
// link extends the chain the node serves when that extends the chain this
// device verified before; else (the node serves a rollback or a fork, for
// instance the thief's branch) it extends the chain verified before, and
// wins the fork by the recovery-key step of the fork rule. It returns the
// new chain's version.
func (c *Client) Recover(ctx context.Context, rk e2ee.RecoveryKey, target ident.DeviceID) (uint64, error) {
	st, err := c.home.State()
	if err != nil {
		return 0, err
	}
	set, links, err := savedChain(st)
	if err != nil {
		return 0, err
	}
	netSet, netLinks, err := c.fetchChain(ctx, c.api, set.User())
	if err != nil {
		return 0, err
	}
	if ident.Relate(set, netSet) == ident.ChainExtends {
		set, links = netSet, netLinks
	}
	if pub, ok := set.Recovery(); !ok || !pub.Equal(rk.Public()) {
		return 0, fmt.Errorf("%w: %s", ErrNotRecoveryKey, set.User())
	}
	if _, ok := set.Lookup(target); !ok {
		return 0, fmt.Errorf("%w: %s", ErrUnknownDevice, target)
	}
	link, err := e2ee.NewRecoveryRevokeDevice(set, rk, target, c.now())
	if err != nil {
		return 0, fmt.Errorf("client: recover: revoke %s: %w", target, err)
	}
	if err := c.api.AppendLink(ctx, set.User(), link.Encode()); err != nil {
		return 0, err
	}
	st.Chain = append(encodeLinks(links), link.Encode())
	if err := c.home.SaveState(st); err != nil {
		return 0, err
	}
	return set.Version() + 1, nil
}
