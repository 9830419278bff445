package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/volo-chat/volo/client"
)

// EnvBackupPassword holds the backup password when no --password-file is given.
const EnvBackupPassword = "VOLO_BACKUP_PASSWORD"

// maxBackupPasswordFileSize bounds what --password-file reads.
const maxBackupPasswordFileSize = 4096

// backupFlags are the flags of backup and restore.
type backupFlags struct {
	passwordFile string
	quiet        bool
}

func (f *backupFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.passwordFile, "password-file", "", "read the backup password from this file (first line)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "no progress bars")
}

const backupPasswordHelp = `The backup password is not your device passphrase: it is a separate
password that only you know, asked for again when you restore on another
device. It comes from --password-file, else $` + EnvBackupPassword + `, else an
interactive prompt. A new backup needs at least %d characters. Lose it and
the backup cannot be opened by anyone.`

// backupPassword reads the backup password; for a new backup (confirm) an
// interactive prompt asks twice and a short password is refused.
func (r *runner) backupPassword(f *backupFlags, confirm bool) ([]byte, error) {
	var p []byte
	switch {
	case f.passwordFile != "":
		data, err := readSmallFile(f.passwordFile, maxBackupPasswordFileSize)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[:i]
		}
		p = bytes.TrimSuffix(data, []byte("\r"))
	case r.getenv(EnvBackupPassword) != "":
		p = []byte(r.getenv(EnvBackupPassword))
	default:
		in, ok := r.stdin.(*os.File)
		if !ok || !term.IsTerminal(int(in.Fd())) {
			return nil, fmt.Errorf("no backup password: use --password-file, set $%s, or run in a terminal", EnvBackupPassword)
		}
		fmt.Fprint(r.stderr, "Backup password (not your device passphrase): ")
		var err error
		p, err = term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(r.stderr)
		if err != nil {
			return nil, fmt.Errorf("read backup password: %w", err)
		}
		if confirm && len(p) >= client.MinBackupPasswordLength {
			fmt.Fprint(r.stderr, "Repeat backup password: ")
			p2, err := term.ReadPassword(int(in.Fd()))
			fmt.Fprintln(r.stderr)
			if err != nil {
				return nil, fmt.Errorf("read backup password: %w", err)
			}
			if !bytes.Equal(p, p2) {
				return nil, errors.New("the backup passwords do not match")
			}
		}
	}
	if len(p) == 0 {
		return nil, errors.New("empty backup password")
	}
	if confirm && len(p) < client.MinBackupPasswordLength {
		return nil, client.ErrBackupPasswordTooShort
	}
	return p, nil
}

// progressBars shows one bar per phase on stderr when it is a terminal
// and quiet is not set; otherwise it is nil (no reports).
func (r *runner) progressBars(quiet bool) func(client.BackupProgress) {
	f, ok := r.stderr.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	var bar *progressbar.ProgressBar
	var phase client.BackupPhase
	return func(p client.BackupProgress) {
		if bar == nil || p.Phase != phase {
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(r.stderr)
			}
			phase = p.Phase
			bar = progressbar.NewOptions64(p.Total,
				progressbar.OptionSetWriter(r.stderr),
				progressbar.OptionSetDescription(p.Phase.String()),
				progressbar.OptionShowBytes(p.Phase != client.PhasePack),
				progressbar.OptionShowCount(),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetPredictTime(true),
			)
		}
		bar.Set64(p.Done)
		if p.Done >= p.Total {
			bar.Finish()
			fmt.Fprintln(r.stderr)
			bar = nil
		}
	}
}

// explainBackup turns backup failures into what a person can act on.
func explainBackup(err error) error {
	switch {
	case errors.Is(err, client.ErrBackupOverQuota),
		errors.Is(err, client.ErrBackupWrongPassword),
		errors.Is(err, client.ErrBackupDamaged),
		errors.Is(err, client.ErrNoBackup):
		return err
	case client.IsCode(err, client.CodeUnauthenticated):
		return fmt.Errorf("the node refused this device's signature (is the clock right?): %w", err)
	}
	return err
}

func (r *runner) backupCmd() *cobra.Command {
	var f backupFlags
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up your chat history to the network, encrypted with a backup password",
		Long: `backup writes this device's chat history (every conversation), contacts and
settings into one archive, compresses it, encrypts it with a key derived
from your backup password (Argon2id with a random salt), cuts it into 1 MiB
chunks and uploads them through the node to the storage nodes of the
network, then publishes a pointer to it signed by this device. Nodes only
ever see ciphertext. Device keys are not in a backup: a new device has its
own. The backup replaces the previous one.

` + fmt.Sprintf(backupPasswordHelp, client.MinBackupPasswordLength) + `

"volo backup status" shows the last backup and how many storage nodes hold it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			pw, err := r.backupPassword(&f, true)
			if err != nil {
				return err
			}
			res, err := ch.Backup(cmd.Context(), pw, client.BackupOptions{KDF: r.kdf, Progress: r.progressBars(f.quiet)})
			if err != nil {
				return explainBackup(err)
			}
			fmt.Fprintf(r.stdout, "Backed up %d messages of %d conversations.\nsize      %s in %d chunks (at least %d replicas each)\nmanifest  %s\ntime      %s\n",
				res.Messages, res.Contacts, sizeString(res.Pointer.Size), res.Chunks, res.MinReplicas, res.Pointer.Manifest, res.Pointer.Time.Local().Format(time.RFC3339))
			return nil
		},
	}
	f.add(cmd)
	cmd.AddCommand(r.backupStatusCmd())
	return cmd
}

func (r *runner) backupStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show your last backup and how many storage nodes hold it",
		Long: `status fetches your user's backup pointer, verifies its signature against
your chain, fetches the manifest and asks the node how many storage nodes
hold the manifest and each chunk (an even sample of ` + fmt.Sprint(client.MaxStatusChunks) + ` chunks for larger
backups). It needs neither the backup password nor the passphrase.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.open("")
			if err != nil {
				return err
			}
			s, err := c.BackupStatus(cmd.Context())
			if err != nil {
				return explainBackup(err)
			}
			fmt.Fprintf(r.stdout, "last backup  %s (by device %s)\nsize         %s in %d chunks\nmanifest     %s (%d replicas)\n",
				s.Pointer.Time.Local().Format(time.RFC3339), s.Pointer.Device, sizeString(s.Pointer.Size), s.Chunks, s.Pointer.Manifest, s.ManifestReplicas)
			what := "every chunk"
			if s.Sampled {
				what = fmt.Sprintf("a sample of %d chunks", len(s.Checked))
			}
			fmt.Fprintf(r.stdout, "replicas     at least %d (%s checked)\n", s.MinReplicas, what)
			tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CHUNK\tCID\tSIZE\tREPLICAS\t")
			for _, ck := range s.Checked {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t\n", ck.Index+1, ck.CID, ck.Size, ck.Replicas)
			}
			return tw.Flush()
		},
	}
}

func (r *runner) restoreCmd() *cobra.Command {
	var f backupFlags
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore your chat history from your last backup",
		Long: `restore finds your user's last backup on the network (its pointer is signed
by one of your devices and checked against your chain), downloads every
chunk (each checked against its content address), decrypts it with your
backup password and decodes all of it; only then does it add the messages
this device lacks to its history (messages it has already are kept as they
are). A wrong password or a damaged backup imports nothing.

Use it on a newly linked device, or on a reinstalled one after linking it.

` + fmt.Sprintf(backupPasswordHelp, client.MinBackupPasswordLength),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			pw, err := r.backupPassword(&f, false)
			if err != nil {
				return err
			}
			res, err := ch.Restore(cmd.Context(), pw, client.BackupOptions{Progress: r.progressBars(f.quiet)})
			if err != nil {
				return explainBackup(err)
			}
			fmt.Fprintf(r.stdout, "Restored the backup of %s: %d messages of %d conversations, %d new on this device.\n",
				res.Pointer.Time.Local().Format(time.RFC3339), res.Messages, res.Contacts, res.Imported)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// sizeString prints a byte count for people.
func sizeString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
