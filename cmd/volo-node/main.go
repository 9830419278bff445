// Command volo-node runs a Volo node: one of the identical servers of the
// network, joined to the others through the libp2p DHT.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/configs"
	"github.com/volo-chat/volo/node"
	"github.com/volo-chat/volo/p2p"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "volo-node:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// flags are the settings shared by run, devnet and keygen. Only the flags a
// user sets override the configuration file.
type flags struct {
	config    string
	dataDir   string
	apiListen string
	p2pListen []string
	bootstrap []string
	logLevel  string
	logFormat string
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var f flags
	def := node.DefaultConfig()
	root := &cobra.Command{
		Use:   "volo-node",
		Short: "Run a Volo node",
		Long: `volo-node runs a node of the Volo network: an end-to-end encrypted
messenger whose servers are identical libp2p nodes. With no subcommand it
runs a node (the same as "volo-node run").`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&f.config, "config", "", "configuration file (default: the embedded "+configs.Default+")")
	pf.StringVar(&f.dataDir, "data-dir", def.DataDir, "directory of the node's identity and database")
	pf.StringVar(&f.apiListen, "api-listen", def.API.Listen, "HOST:PORT of the client API")
	pf.StringArrayVar(&f.p2pListen, "p2p-listen", def.P2P.Listen, "libp2p listen multiaddr (repeatable)")
	pf.StringArrayVar(&f.bootstrap, "bootstrap", nil, "full multiaddr of a node to join, ending in /p2p/<peer ID> (repeatable)")
	pf.StringVar(&f.logLevel, "log-level", def.Log.Level, "debug, info, warn or error")
	pf.StringVar(&f.logFormat, "log-format", def.Log.Format, "text or json")

	run := &cobra.Command{
		Use:   "run",
		Short: "Run a node until SIGINT or SIGTERM (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, f)
			if err != nil {
				return err
			}
			return runNode(cmd.Context(), cfg, stdout, newLogger(cfg, stderr))
		},
	}
	root.RunE = run.RunE
	root.AddCommand(run, newDevnetCmd(&f, stdout, stderr), newBenchCmd(&f, stdout, stderr), newKeygenCmd(&f, stdout), newConfigCmd(stdout), newVersionCmd(stdout), newVerifyCmd(stdout))
	return root
}

// loadConfig applies, in order: defaults, the configuration file (or the
// embedded dev.toml), then the flags the user set.
func loadConfig(cmd *cobra.Command, f flags) (node.Config, error) {
	name, doc := configs.Default, []byte(nil)
	var err error
	if f.config != "" {
		name = f.config
		doc, err = os.ReadFile(f.config)
	} else {
		doc, err = configs.Get(configs.Default)
	}
	if err != nil {
		return node.Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := node.DecodeConfig(node.DefaultConfig(), name, doc)
	if err != nil {
		return node.Config{}, fmt.Errorf("config %w", err)
	}
	set := cmd.Flags().Changed
	if set("data-dir") {
		cfg.DataDir = f.dataDir
	}
	if set("api-listen") {
		cfg.API.Listen = f.apiListen
	}
	if set("p2p-listen") {
		cfg.P2P.Listen = f.p2pListen
	}
	if set("bootstrap") {
		cfg.P2P.Bootstrap = f.bootstrap
	}
	if set("log-level") {
		cfg.Log.Level = f.logLevel
	}
	if set("log-format") {
		cfg.Log.Format = f.logFormat
	}
	if err := cfg.Validate(); err != nil {
		return node.Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

func newLogger(cfg node.Config, w io.Writer) *slog.Logger {
	level, _ := node.ParseLogLevel(cfg.Log.Level) // validated by loadConfig
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runNode runs one node until ctx ends (SIGINT or SIGTERM), then stops it.
// A file or directory the configuration names that is missing stops it
// before it writes anything.
func runNode(ctx context.Context, cfg node.Config, stdout io.Writer, log *slog.Logger) error {
	if err := checkFiles(cfg); err != nil {
		return err
	}
	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "volo-node %s\n  api      %s\n  peer id  %s\n", node.Version, n.APIURL(), n.PeerID())
	for _, a := range n.Host().FullAddrs() {
		fmt.Fprintf(stdout, "  address  %s\n", a)
	}
	printVerifyHint(stdout, n)
	<-ctx.Done()
	log.Info("shutting down")
	return n.Stop()
}

func newKeygenCmd(f *flags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Create the node identity in the data directory and print its peer ID",
		Long: `keygen creates the node's libp2p private key (identity.key, mode 0600)
in the data directory, or reads the one already there, and prints the peer
ID. The peer ID is derived from this key: back the file up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, *f)
			if err != nil {
				return err
			}
			if err := checkDataDir(cfg.DataDir); err != nil {
				return err
			}
			if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
				return fmt.Errorf("data_dir: %w", err)
			}
			path := filepath.Join(cfg.DataDir, node.IdentityFile)
			key, created, err := p2p.LoadOrCreateIdentity(path)
			if err != nil {
				return err
			}
			id, err := p2p.PeerIDOf(key)
			if err != nil {
				return err
			}
			verb := "existing"
			if created {
				verb = "created"
			}
			fmt.Fprintf(stdout, "%s\n", id)
			fmt.Fprintf(cmd.ErrOrStderr(), "%s identity %s\n", verb, path)
			return nil
		},
	}
}

func newConfigCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "config [NAME]",
		Short: "Print an embedded configuration file (dev.toml or node.toml)",
		Long: `config prints one of the configuration files built into volo-node, to
start an operator's own from:
  volo-node config node.toml > node.toml
node.toml's first lines say what to create and edit before
  volo-node run --config node.toml
A node stops before it writes anything when a file or directory its
configuration names is missing, and says how to make it.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: configs.Names(),
		RunE: func(_ *cobra.Command, args []string) error {
			name := configs.Default
			if len(args) == 1 {
				name = args[0]
			}
			b, err := configs.Get(name)
			if err != nil {
				return err
			}
			_, err = stdout.Write(b)
			return err
		},
	}
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			rev := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = s.Value
					}
				}
			}
			fmt.Fprintf(stdout, "volo-node %s (commit %s, %s, %s/%s)\n", node.Version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
