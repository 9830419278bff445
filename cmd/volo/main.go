// Command volo is the person's Volo client: it registers a user, links and
// revokes devices, looks up users' verified devices and chats through any node.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// Defaults and environment variables of the CLI.
const (
	// DefaultNode is the node the CLI talks to when nothing else names one.
	DefaultNode = "http://127.0.0.1:8080"
	// DefaultHomeName is the home directory under the user's home.
	DefaultHomeName = ".volo"

	EnvHome       = "VOLO_HOME"
	EnvNode       = "VOLO_NODE"
	EnvPassphrase = "VOLO_PASSPHRASE"
	// EnvRecoveryKey holds the recovery key for "volo recover".
	EnvRecoveryKey = "VOLO_RECOVERY_KEY"

	// maxPassphraseFileSize bounds what --passphrase-file reads.
	maxPassphraseFileSize = 4096
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	if err := newRootCmd(e).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "volo:", explain(err))
		os.Exit(1)
	}
}

// explain is what main prints of a command's error: a hint as it is; a
// node that cannot be reached, named, with how to pick another (whichever
// command met it); anything else as it is.
func explain(err error) string {
	var h *hint
	if errors.As(err, &h) {
		return h.msg
	}
	var cc *client.ChainConflictError
	if errors.As(err, &cc) {
		return fmt.Sprintf("%v\nNothing is sent to user %s until the node serves the chain verified before or an extension of it. "+
			"If the user made the node's chain (with their recovery key), accept it: volo accept-chain %s", err, cc.User, cc.User)
	}
	var nu *client.NodeUnreachableError
	if errors.As(err, &nu) {
		return fmt.Sprintf("cannot reach the node at %s (%s): is it running? Pick another node with --node URL or $%s", nu.URL, nu.Reason(), EnvNode)
	}
	return err.Error()
}

// hint is an error shown to the person as msg, a sentence that says what
// happened and what to do; err stays underneath for errors.Is.
type hint struct {
	msg string
	err error
}

func (h *hint) Error() string { return h.msg }
func (h *hint) Unwrap() error { return h.err }

// env is everything the commands take from the outside world, so tests
// can run several CLIs in one process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// httpClient sends every request to nodes (http.DefaultClient if nil).
	httpClient *http.Client
	// kdf is the Argon2id cost of encrypting new keys and new backups
	// (default if zero).
	kdf e2ee.BackupParams
	// openBrowser opens the login page; nil prints its address. Either
	// way the confirmation code is printed.
	openBrowser func(url string) error
}

type globalFlags struct {
	home           string
	node           string
	passphraseFile string
}

func newRootCmd(e env) *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "volo",
		Short: "Volo, an end-to-end encrypted messenger",
		Long: fmt.Sprintf(`volo is the Volo client. Your device's private keys live only in the home
directory (--home, default ~/.volo), encrypted with your passphrase; nodes only
ever see public keys, signatures and ciphertext.

The passphrase comes from --passphrase-file, else $VOLO_PASSPHRASE, else an
interactive prompt. A new passphrase (register, link join) needs at least %d
characters.`, client.MinPassphraseLength),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.home, "home", "", "home directory of this device (default $"+EnvHome+", else ~/"+DefaultHomeName+")")
	pf.StringVar(&g.node, "node", "", "base URL of the node's API (default $"+EnvNode+", else the node this device registered with, else "+DefaultNode+")")
	pf.StringVar(&g.passphraseFile, "passphrase-file", "", "read the passphrase from this file (first line)")

	r := &runner{env: e, flags: &g, root: root}
	root.AddCommand(
		r.registerCmd(),
		r.linkCmd(),
		r.devicesCmd(),
		r.revokeCmd(),
		r.recoverCmd(),
		r.acceptChainCmd(),
		r.lookupCmd(),
		r.whoamiCmd(),
		r.versionCmd(),
		r.sendCmd(),
		r.chatCmd(),
		r.chatsCmd(),
		r.inboxCmd(),
		r.historyCmd(),
		r.backupCmd(),
		r.restoreCmd(),
	)
	return root
}

type runner struct {
	env
	flags *globalFlags
	root  *cobra.Command
}

func (r *runner) homeDir() (string, error) {
	if r.flags.home != "" {
		return r.flags.home, nil
	}
	if h := r.getenv(EnvHome); h != "" {
		return h, nil
	}
	uh, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory: use --home or $%s: %w", EnvHome, err)
	}
	return filepath.Join(uh, DefaultHomeName), nil
}

// explicitNode returns the node named by --node or $VOLO_NODE, or "".
func (r *runner) explicitNode() string {
	if r.flags.node != "" {
		return r.flags.node
	}
	return r.getenv(EnvNode)
}

// open builds the client of a command that uses this home's device; a
// home without one (which open never creates) is an error that says how
// to make one. The node is, in order: --node, $VOLO_NODE, fallback (if
// not ""), the node saved in the home, DefaultNode.
func (r *runner) open(fallback string) (*client.Client, error) {
	return r.openClient(fallback, true)
}

// openAny is open for a command that works without a device (lookup) or
// makes one (register, link join, which create the home when they succeed).
func (r *runner) openAny(fallback string) (*client.Client, error) {
	return r.openClient(fallback, false)
}

func (r *runner) openClient(fallback string, needDevice bool) (*client.Client, error) {
	dir, err := r.homeDir()
	if err != nil {
		return nil, err
	}
	home, err := client.OpenHome(dir, r.kdf)
	if err != nil {
		return nil, err
	}
	if needDevice {
		if has, err := home.HasDevice(); err != nil {
			return nil, err
		} else if !has {
			return nil, &hint{
				msg: fmt.Sprintf(`there is no device in %s: run "volo register" to make this device the first of a new user, or "volo link join CODE" to add it to your user (or pick another home with --home DIR or $%s)`, dir, EnvHome),
				err: client.ErrNoHome,
			}
		}
	}
	nodeURL := r.explicitNode()
	if nodeURL == "" {
		nodeURL = fallback
	}
	if nodeURL == "" {
		if st, err := home.State(); err == nil {
			nodeURL = st.Node
		}
	}
	if nodeURL == "" {
		nodeURL = DefaultNode
	}
	return client.New(client.Options{Home: dir, Node: nodeURL, HTTPClient: r.httpClient, KDF: r.kdf})
}

// passphrase reads the passphrase. A new one (for new keys) must pass
// client.CheckNewPassphrase, and an interactive prompt asks for it twice.
func (r *runner) passphrase(isNew bool) ([]byte, error) {
	if f := r.flags.passphraseFile; f != "" {
		data, err := readSmallFile(f, maxPassphraseFileSize)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[:i]
		}
		data = bytes.TrimSuffix(data, []byte("\r"))
		if len(data) == 0 {
			return nil, fmt.Errorf("passphrase file %s: %w", f, client.ErrEmptyPassphrase)
		}
		if isNew {
			if err := client.CheckNewPassphrase(data); err != nil {
				return nil, fmt.Errorf("passphrase file %s: %w", f, err)
			}
		}
		return data, nil
	}
	if p := r.getenv(EnvPassphrase); p != "" {
		if isNew {
			if err := client.CheckNewPassphrase([]byte(p)); err != nil {
				return nil, fmt.Errorf("$%s: %w", EnvPassphrase, err)
			}
		}
		return []byte(p), nil
	}
	f, ok := r.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, fmt.Errorf("no passphrase: use --passphrase-file, set $%s, or run in a terminal", EnvPassphrase)
	}
	fmt.Fprint(r.stderr, "Passphrase: ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(r.stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, client.ErrEmptyPassphrase
	}
	if isNew {
		if err := client.CheckNewPassphrase(p); err != nil {
			return nil, err
		}
		fmt.Fprint(r.stderr, "Repeat passphrase: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(r.stderr)
		if err != nil {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		if !bytes.Equal(p, p2) {
			return nil, errors.New("the passphrases do not match")
		}
	}
	return p, nil
}

func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

func (r *runner) registerCmd() *cobra.Command {
	var provider string
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Create a new user with this device as its first device",
		Long: `register creates this device's keys and a recovery key, registers a new user
with them on the node and prints the user ID and, once, the recovery key. With --provider NAME it prints the address of the
provider's login page: open it in a browser and log in; the command waits for
the login to finish. Without --provider the node must allow open registration
(development configurations only). The home must not hold a device yet; it
is created when the registration succeeds, and a failed one leaves nothing
there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.openAny("")
			if err != nil {
				return err
			}
			if has, err := c.Home().HasDevice(); err != nil {
				return err
			} else if has {
				return fmt.Errorf("%w: %s", client.ErrHomeInUse, c.Home().Dir())
			}
			pass, err := r.passphrase(true)
			if err != nil {
				return err
			}
			open := func(p client.LoginPage) error {
				if r.openBrowser == nil {
					fmt.Fprintf(r.stdout, "Open this address in your browser and log in:\n\n  %s\n\n", p.URL)
				}
				fmt.Fprintf(r.stdout, "Confirmation code: %s\nThe page you end on after logging in must show the same code; if it shows\nanother one, stop (press Ctrl-C): that login is not yours.\nWaiting for the login...\n", p.Code)
				if r.openBrowser != nil {
					return r.openBrowser(p.URL)
				}
				return nil
			}
			id, rk, err := c.RegisterWithRecovery(cmd.Context(), provider, open, pass)
			if err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "Registered.\nuser    %s\ndevice  %s\nnode    %s\n", id.User, id.Device, id.Node)
			fmt.Fprintf(r.stdout, "\nYour recovery key, shown this once and kept nowhere (write it on paper, keep it\n"+
				"offline). It can revoke any of your devices, with \"volo recover\", and it wins\n"+
				"if a thief forks your chain:\n\n  %s\n", rk.Text())
			return nil
		},
	}
	cmd.Flags().StringVar(&provider, "provider", "", "OAuth (OpenID Connect) provider configured on the node, e.g. google")
	return cmd
}

func (r *runner) linkCmd() *cobra.Command {
	link := &cobra.Command{
		Use:   "link",
		Short: "Add a new device to your user",
		Long: `Adding a device takes both devices: run "volo link show" on a device that is
already registered, then "volo link join CODE" on the new device (with an
empty home), giving it the code the first one shows.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show a linking code (QR and text) and add the device that uses it",
		Long: `show prints a linking code as a QR code and as text, waits for the new device
to answer through the node's rendezvous, verifies its signed request, signs
the link that adds it to your chain and waits until the node's chain holds it.
Anyone who gets the code within the next minutes can add a device: show it
only to your own new device.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.open("")
			if err != nil {
				return err
			}
			pass, err := r.passphrase(false)
			if err != nil {
				return err
			}
			id, err := c.LinkShow(cmd.Context(), pass, func(code e2ee.LinkingCode) error {
				fmt.Fprintln(r.stdout, "Scan this code with the new device:")
				qrterminal.GenerateWithConfig(code.QR(), qrterminal.Config{
					Level: qrterminal.M, Writer: r.stdout, HalfBlocks: true, QuietZone: 2,
					BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK,
					WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE,
				})
				fmt.Fprintf(r.stdout, "or run on the new device:\n\n  volo link join '%s'\n\n", code.QR())
				fmt.Fprintf(r.stdout, "or type the code there (with --node %s):\n\n  %s\n\n", code.Node, code.Text())
				fmt.Fprintf(r.stdout, "Waiting for the new device (at most %s)...\n", client.LinkTimeout)
				return nil
			})
			if err != nil {
				return explainLink(err, `run "volo link show" again for a new code`, "", false)
			}
			fmt.Fprintf(r.stdout, "Added device %s\n", id)
			return nil
		},
	}
	join := &cobra.Command{
		Use:   "join CODE",
		Short: "Join your user with this new device, using the code another device shows",
		Long: `join completes linking on a new device whose home is still empty. CODE is
what "volo link show" printed on your other device: either the QR form
(volo-link:v1:...?node=...) or the typed form (seven groups of five letters
and digits; then give the node that "volo link show" printed with --node or
$VOLO_NODE). The device's keys are created here and never leave it. The
home is created when linking succeeds; a failed join leaves nothing there.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			codeNode, err := client.LinkingCodeNode(args[0])
			if err != nil {
				return err
			}
			if codeNode == "" && r.explicitNode() == "" {
				return fmt.Errorf(`a typed linking code does not name its node: give the node that "volo link show" printed with it, with --node URL or $%s`, EnvNode)
			}
			c, err := r.openAny(codeNode)
			if err != nil {
				return err
			}
			if has, err := c.Home().HasDevice(); err != nil {
				return err
			} else if has {
				return fmt.Errorf("%w: %s (link join needs an empty home)", client.ErrHomeInUse, c.Home().Dir())
			}
			pass, err := r.passphrase(true)
			if err != nil {
				return err
			}
			id, err := c.LinkJoin(cmd.Context(), args[0], pass)
			if err != nil {
				rv := c.API().URL()
				if codeNode != "" {
					u, _ := client.ParseNodeURL(codeNode) // LinkJoin parsed it
					rv = u.String()
				}
				return explainLink(err, `run "volo link show" again on your other device for a new code`, rv, codeNode == "")
			}
			fmt.Fprintf(r.stdout, "Linked.\nuser    %s\ndevice  %s\nnode    %s\n", id.User, id.Device, id.Node)
			return nil
		},
	}
	link.AddCommand(show, join)
	return link
}

// explainLink turns the failures of linking into what a person can act
// on; again says how to get a new code. For link join, rendezvous is the
// node whose rendezvous it used (the code's, else --node), and typed
// tells whether the code was the typed form, which names no node.
func explainLink(err error, again, rendezvous string, typed bool) error {
	var nu *client.NodeUnreachableError
	switch {
	case !typed && rendezvous != "" && errors.As(err, &nu) && nu.URL == rendezvous:
		// --node does not choose the node of a code that names one.
		return &hint{msg: fmt.Sprintf(`cannot reach the node at %s that the linking code names (%s): if this device reaches that node at another address, give the typed code with --node URL instead`, nu.URL, nu.Reason()), err: err}
	case errors.Is(err, client.ErrLinkingCodeUsed):
		return &hint{msg: "this linking code was already used by another device: " + again, err: err}
	case errors.Is(err, client.ErrLinkingExpired):
		return &hint{msg: fmt.Sprintf("the linking code expired (a code lasts %d minutes): %s", int(client.LinkTimeout.Minutes()), again), err: err}
	case errors.Is(err, client.ErrNoRendezvous) && typed:
		return &hint{msg: fmt.Sprintf(`no device is showing this linking code at %s: give the node that "volo link show" printed with the code (--node URL); if it is that node, the code expired or the node restarted: %s`, rendezvous, again), err: err}
	case errors.Is(err, client.ErrNoRendezvous):
		return &hint{msg: fmt.Sprintf("no device is showing this linking code at %s: the code expired or the node restarted: %s", rendezvous, again), err: err}
	case errors.Is(err, client.ErrChainMoved):
		return &hint{msg: "your user's devices changed while linking: " + again, err: err}
	}
	return err
}

func (r *runner) devicesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List your user's devices, verified from the chain",
		Long: `devices fetches your user's chain from the node, verifies every link from
the user ID alone, checks it extends the chain this device verified before,
and lists the active devices with the fingerprints of their keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.open("")
			if err != nil {
				return err
			}
			info, err := c.Devices(cmd.Context())
			if err != nil {
				return err
			}
			return r.printUser(info)
		},
	}
}

func (r *runner) revokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke DEVICE",
		Short: "Remove another of your devices from your user",
		Long: `revoke signs, with this device, a link that revokes DEVICE (an ID from
"volo devices") and submits it. A device cannot revoke itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := ident.ParseDeviceID(args[0])
			if err != nil {
				return fmt.Errorf("device %q: %w", args[0], err)
			}
			c, err := r.open("")
			if err != nil {
				return err
			}
			pass, err := r.passphrase(false)
			if err != nil {
				return err
			}
			v, err := c.Revoke(cmd.Context(), target, pass)
			if err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "Revoked device %s (chain version %d)\n", target, v)
			return nil
		},
	}
}

func (r *runner) recoverCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "recover DEVICE",
		Short: "Revoke a device (a stolen one) with your recovery key",
		Long: `recover signs, with the recovery key "volo register" showed, a link that
revokes DEVICE (an ID from "volo devices") and submits it. It needs no
passphrase and works when the node serves a thief's fork of your chain: the
link extends the chain this device verified before, and a link signed by
the recovery key wins the fork. The key comes from --recovery-file (first
line), else $` + EnvRecoveryKey + `, else a prompt; never give it on the command line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := ident.ParseDeviceID(args[0])
			if err != nil {
				return fmt.Errorf("device %q: %w", args[0], err)
			}
			c, err := r.open("")
			if err != nil {
				return err
			}
			text, err := r.secret(keyFile, EnvRecoveryKey, "Recovery key")
			if err != nil {
				return err
			}
			rk, err := e2ee.ParseRecoveryKey(string(text))
			if err != nil {
				return err
			}
			v, err := c.Recover(cmd.Context(), rk, target)
			if err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "Revoked device %s with the recovery key (chain version %d)\n", target, v)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "recovery-file", "", "read the recovery key from this file (first line)")
	return cmd
}

// secret reads a secret that is not the passphrase: the first line of
// file, else $envName, else a prompt without echo on a terminal.
func (r *runner) secret(file, envName, prompt string) ([]byte, error) {
	if file != "" {
		data, err := readSmallFile(file, maxPassphraseFileSize)
		if err != nil {
			return nil, fmt.Errorf("%s file: %w", prompt, err)
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[:i]
		}
		return bytes.TrimSuffix(data, []byte("\r")), nil
	}
	if v := r.getenv(envName); v != "" {
		return []byte(v), nil
	}
	f, ok := r.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, fmt.Errorf("no %s: use the file flag, set $%s, or run in a terminal", strings.ToLower(prompt), envName)
	}
	fmt.Fprint(r.stderr, prompt+": ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(r.stderr)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", strings.ToLower(prompt), err)
	}
	return p, nil
}

func (r *runner) lookupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lookup USER",
		Short: "Show a user's devices, verified from the user ID alone",
		Long: `lookup fetches USER's chain from the node (which may take it from the DHT),
verifies every link from the user ID alone and lists the active devices with
the fingerprints of their keys. The node is not trusted: a chain that does
not verify is an error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := ident.ParseUserID(args[0])
			if err != nil {
				return fmt.Errorf("user %q: %w", args[0], err)
			}
			c, err := r.openAny("")
			if err != nil {
				return err
			}
			info, err := c.Lookup(cmd.Context(), user)
			if err != nil {
				return err
			}
			return r.printUser(info)
		},
	}
}

func (r *runner) printUser(info client.UserInfo) error {
	fmt.Fprintf(r.stdout, "user %s (chain version %d, verified)\n", info.User, info.Version)
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSIGNING KEY\tMESSAGING KEY\tADDED\t")
	for _, d := range info.Devices {
		self := ""
		if d.Self {
			self = "(this device)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.SigningKey, d.MessagingKey, d.Added.UTC().Format(time.RFC3339), self)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, id := range info.Revoked {
		fmt.Fprintf(r.stdout, "revoked %s\n", id)
	}
	return nil
}

func (r *runner) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show this device's user, device ID and node",
		Long:  `whoami prints what the home directory records; it needs neither the passphrase nor the node.`,
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, err := r.open("")
			if err != nil {
				return err
			}
			id, st, err := c.Whoami()
			if err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "user    %s\ndevice  %s\nnode    %s\nhome    %s\nchain   version %d (last verified)\n",
				id.User, id.Device, id.Node, c.Home().Dir(), len(st.Chain))
			return nil
		},
	}
}

func (r *runner) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(r.stdout, "volo %s (%s, %s/%s)\n", client.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
