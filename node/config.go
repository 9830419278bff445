package node

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/p2p"
	"github.com/volo-chat/volo/relay"
)

// Config is everything a node is built from. configs/*.toml decode straight
// into it; DefaultConfig is the same as configs/dev.toml.
type Config struct {
	// DataDir holds the node's identity and its database.
	DataDir string `toml:"data_dir"`
	// Log sets the level and format of the node's logs.
	Log LogConfig `toml:"log"`
	// API is the client-facing HTTP server.
	API api.Config `toml:"api"`
	// P2P is the libp2p host, DHT and gossipsub.
	P2P p2p.Config `toml:"p2p"`
	// Store is the node's badger database.
	Store StoreConfig `toml:"store"`
	// Registry is the key registry: registration, OAuth providers, chains.
	Registry keyregistry.Config `toml:"registry"`
	// Relay is the relay: mailboxes on the closest nodes, placement, expiry.
	Relay relay.Config `toml:"relay"`
	// Chain is where accepted links are anchored (chain.go).
	Chain ChainConfig `toml:"chain"`
	// Backup is the backup store: encrypted chunks on the closest storage
	// nodes, quotas, repair, garbage collection, backup pointers.
	Backup backupstore.Config `toml:"backup"`
}

// LogConfig is the [log] section.
type LogConfig struct {
	// Level is one of debug, info, warn, error.
	Level string `toml:"level"`
	// Format is text or json.
	Format string `toml:"format"`
}

// StoreConfig is the [store] section.
type StoreConfig struct {
	// SyncWrites makes every write durable before it is acknowledged.
	SyncWrites bool `toml:"sync_writes"`
}

// DefaultConfig is a single node on this machine: data in ./volo-data, the
// API on 127.0.0.1:8080, libp2p on 127.0.0.1:4001 (TCP and QUIC).
func DefaultConfig() Config {
	return Config{
		DataDir:  "./volo-data",
		Log:      LogConfig{Level: "info", Format: "text"},
		API:      api.DefaultConfig(),
		P2P:      p2p.DefaultConfig(),
		Store:    StoreConfig{SyncWrites: true},
		Registry: keyregistry.DefaultConfig(),
		Relay:    relay.DefaultConfig(),
		Chain:    DefaultChainConfig(),
		Backup:   backupstore.DefaultConfig(),
	}
}

// DecodeConfig decodes a TOML document over base: fields the document sets
// replace those of base. An unknown field or a value of the wrong type is an
// error naming the field and its line; so is a value that fails Validate.
func DecodeConfig(base Config, name string, doc []byte) (Config, error) {
	cfg := base
	dec := toml.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, describeTOMLError(name, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

func describeTOMLError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		msgs := make([]string, len(strict.Errors))
		for i, e := range strict.Errors {
			row, _ := e.Position()
			msgs[i] = fmt.Sprintf("line %d: unknown field %q", row, strings.Join(e.Key(), "."))
		}
		return fmt.Errorf("%s: %s", name, strings.Join(msgs, "; "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		if key := de.Key(); len(key) > 0 {
			return fmt.Errorf("%s: line %d: field %q: %s", name, row, strings.Join(key, "."), de.Error())
		}
		return fmt.Errorf("%s: line %d: %s", name, row, de.Error())
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir: must not be empty")
	}
	if _, err := ParseLogLevel(c.Log.Level); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: %q is neither text nor json", c.Log.Format)
	}
	if err := c.API.Validate(); err != nil {
		return err
	}
	if err := c.P2P.Validate(); err != nil {
		return err
	}
	if err := c.Registry.Validate(); err != nil {
		return err
	}
	if err := c.Chain.Validate(); err != nil {
		return err
	}
	if c.Registry.AllowDevelopmentUsers && c.Chain.Backend == ChainCardano && c.Chain.Network == "mainnet" {
		return errors.New(`registry.allow_development_users: refused on a node anchoring on Cardano mainnet (chain.network = "mainnet"): users registered without an OAuth login are for development networks only`)
	}
	if err := c.Relay.Validate(); err != nil {
		return err
	}
	return c.Backup.Validate()
}

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
