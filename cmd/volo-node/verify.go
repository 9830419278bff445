package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/api"
	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/chain/cardano"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// Defaults and limits of volo-node verify.
const (
	// DefaultMinDepth is the confirmation depth verify requires unless
	// told otherwise: 112 blocks, about 37 minutes on mainnet.
	DefaultMinDepth = 112
	// verifyTimeout bounds the whole verification (fetching the chain,
	// dialing the Cardano node, reading the blocks).
	verifyTimeout = 5 * time.Minute
	// maxUserResponse bounds a GET /v1/users/{id} answer or chain file:
	// a full chain of links with their proofs, as base64 JSON.
	maxUserResponse = 16 << 20
)

// Exit codes of volo-node verify.
const (
	exitNotAnchored = 1 // some link is not anchored at the required depth
	exitUsage       = 2 // bad flags, unreadable input, unreachable node
)

// exitError carries the process exit code of a command's failure.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

type verifyFlags struct {
	user      string
	nodeURL   string
	chainFile string
	socket    string
	relay     string
	magic     uint32
	network   string
	minDepth  uint64
	json      bool
}

func newVerifyCmd(stdout io.Writer) *cobra.Command {
	var f verifyFlags
	cmd := &cobra.Command{
		Use:   "verify --user USER_ID (--node-url URL | --chain-file FILE) (--cardano-socket PATH | --cardano-relay HOST:PORT) (--network NAME | --network-magic N)",
		Short: "Check that a user's devices are registered and anchored on Cardano",
		Long: `verify checks a user's key registration without trusting any Volo node.

It reads the user's chain and anchor proofs from a node (--node-url, GET
/v1/users/{id}) or from a saved copy of that answer (--chain-file), verifies
the chain from the user ID, then for every link fetches the block the proof
names from a Cardano node, finds the transaction, reads the anchored Merkle
root from its metadata (label 1448037455), checks the link's inclusion
proof against it, the publisher node's signature over the anchor, the
transaction's signature, and that the block is at least --min-depth blocks
deep (default 112, about 37 minutes on mainnet).

The Cardano node is read over node-to-client (--cardano-socket, the
cardano-node's socket) or node-to-node (--cardano-relay, any relay). The
network must be named: --network mainnet|preprod|preview|devnet, or
--network-magic N (for the embedded devnet of volo-node: devnet, 42).

It prints a verdict per link and per device; --json prints it as JSON.
Exit status: 0 when every link is anchored at the required depth, 1 when
any is not (the reason is printed), 2 on usage errors or when the node or
the Cardano node cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVerify(cmd.Context(), f, cmd.Flags().Changed, stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.user, "user", "", "user ID to verify (b…)")
	fl.StringVar(&f.nodeURL, "node-url", "", "base URL of any Volo node's API to read the chain and proofs from")
	fl.StringVar(&f.chainFile, "chain-file", "", "a saved GET /v1/users/{id} answer to verify instead")
	fl.StringVar(&f.socket, "cardano-socket", "", "cardano-node socket to read blocks from (node-to-client)")
	fl.StringVar(&f.relay, "cardano-relay", "", "Cardano relay HOST:PORT to read blocks from (node-to-node)")
	fl.Uint32Var(&f.magic, "network-magic", 0, "network magic of the Cardano node (or use --network)")
	fl.StringVar(&f.network, "network", "", "Cardano network: mainnet, preprod, preview, devnet (or use --network-magic)")
	fl.Uint64Var(&f.minDepth, "min-depth", DefaultMinDepth, "blocks an anchor must be deep, its own block included")
	fl.BoolVar(&f.json, "json", false, "print the verdict as JSON")
	// Usage errors exit 2, not 1: flags that do not parse are usage errors.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%w", err) })
	return cmd
}

// runVerify is volo-node verify. A verdict that is not OK is an
// *exitError with code 1, after the verdict is printed.
func runVerify(ctx context.Context, f verifyFlags, set func(string) bool, stdout io.Writer) error {
	user, err := ident.ParseUserID(f.user)
	if err != nil {
		return usageError("--user: %w", err)
	}
	if (f.nodeURL == "") == (f.chainFile == "") {
		return usageError("give exactly one of --node-url and --chain-file")
	}
	if (f.socket == "") == (f.relay == "") {
		return usageError("give exactly one of --cardano-socket and --cardano-relay")
	}
	var magic uint32
	switch {
	case f.network != "" && set("network-magic"):
		return usageError("give one of --network and --network-magic, not both")
	case f.network != "":
		n, err := cardano.ParseNetwork(f.network)
		if err != nil {
			return usageError("--network: %w", err)
		}
		magic = n.Magic
	case set("network-magic"):
		magic = f.magic
	default:
		return usageError("name the Cardano network: --network mainnet|preprod|preview|devnet or --network-magic N")
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()

	var resp api.UserResponse
	if f.nodeURL != "" {
		err = fetchUser(ctx, f.nodeURL, user, &resp)
	} else {
		err = readChainFile(f.chainFile, &resp)
	}
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if resp.UserID != user.String() {
		return usageError("the chain is of user %q, not %s", resp.UserID, user)
	}
	proofs := make([][]byte, len(resp.Links))
	for i := range min(len(resp.Proofs), len(proofs)) {
		if resp.Proofs[i] != nil {
			proofs[i] = resp.Proofs[i].Proof
		}
	}

	var r chain.Reader
	if f.socket != "" {
		r, err = cardano.DialNodeToClient(ctx, f.socket, magic)
	} else {
		r, err = cardano.DialNodeToNode(ctx, f.relay, magic)
	}
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("connect to the Cardano node: %w", err)}
	}
	defer r.Close()
	v, err := anchorproof.VerifyAnchors(ctx, user, resp.Links, proofs, r, f.minDepth)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else {
		printVerdict(stdout, v)
	}
	if !v.OK {
		return &exitError{code: exitNotAnchored, err: errors.New(failureSummary(v))}
	}
	return nil
}

// failureSummary is the one-line error of a verdict that is not OK.
func failureSummary(v anchorproof.Verdict) string {
	if v.ChainError != "" {
		return "the user chain does not verify: " + v.ChainError
	}
	var bad []string
	for _, l := range v.Links {
		if !l.Anchored {
			bad = append(bad, fmt.Sprintf("link %d: %s", l.Index, l.Reason))
		}
	}
	return fmt.Sprintf("%d of %d links not anchored at depth %d: %s", len(bad), len(v.Links), v.MinDepth, strings.Join(bad, "; "))
}

func fetchUser(ctx context.Context, base string, user ident.UserID, out *api.UserResponse) error {
	u, err := url.Parse(strings.TrimRight(base, "/") + "/v1/users/" + user.String())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("--node-url: %q is not an http(s) URL", base)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch the chain: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserResponse+1))
	if err != nil {
		return fmt.Errorf("fetch the chain: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch the chain: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return decodeUser(body, out)
}

func readChainFile(path string, out *api.UserResponse) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--chain-file: %w", err)
	}
	defer fh.Close()
	body, err := io.ReadAll(io.LimitReader(fh, maxUserResponse+1))
	if err != nil {
		return fmt.Errorf("--chain-file: %w", err)
	}
	if err := decodeUser(body, out); err != nil {
		return fmt.Errorf("--chain-file %s: %w", path, err)
	}
	return nil
}

func decodeUser(body []byte, out *api.UserResponse) error {
	if len(body) > maxUserResponse {
		return fmt.Errorf("chain of more than %d bytes", maxUserResponse)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("not a GET /v1/users/{id} answer: %w", err)
	}
	if len(out.Proofs) > len(out.Links) {
		return fmt.Errorf("%d proofs for %d links", len(out.Proofs), len(out.Links))
	}
	return nil
}

// short abbreviates an identifier for the table.
func short(s string) string {
	if len(s) <= 16 {
		return s
	}
	return s[:8] + "…" + s[len(s)-6:]
}

func printVerdict(w io.Writer, v anchorproof.Verdict) {
	fmt.Fprintf(w, "user %s\n", v.User)
	if v.ChainError != "" {
		fmt.Fprintf(w, "CHAIN DOES NOT VERIFY: %s\n", v.ChainError)
		return
	}
	fmt.Fprintf(w, "chain verified from the user ID: %d links; Cardano tip block %d; required depth %d\n\n", len(v.Links), v.TipBlock, v.MinDepth)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tKIND\tDEVICE\tANCHORED\tDEPTH\tBLOCK NO\tTX\tPUBLISHER")
	for _, l := range v.Links {
		ok := "yes"
		if !l.Anchored {
			ok = "NO"
		}
		depth, blockNo, tx := "-", "-", "-"
		if l.Depth > 0 {
			depth = fmt.Sprint(l.Depth)
		}
		if l.BlockNo > 0 {
			blockNo = fmt.Sprint(l.BlockNo)
		}
		if l.TxID != "" {
			tx = short(l.TxID)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Index, l.Kind, short(l.Device), ok, depth, blockNo, tx, short(l.Publisher))
	}
	tw.Flush()
	for _, l := range v.Links {
		if !l.Anchored {
			fmt.Fprintf(w, "  link %d: %s\n", l.Index, l.Reason)
		}
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tVERDICT")
	for _, d := range v.Devices {
		state, verdict := "active", "anchored"
		if d.Revoked {
			state = "revoked"
		}
		if !d.Anchored {
			verdict = "NOT ANCHORED: " + d.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Device, state, verdict)
	}
	tw.Flush()
	if v.OK {
		fmt.Fprintf(w, "\nOK: every link is anchored at depth %d or more\n", v.MinDepth)
	} else {
		fmt.Fprintf(w, "\nFAILED: not every link is anchored at depth %d\n", v.MinDepth)
	}
}
