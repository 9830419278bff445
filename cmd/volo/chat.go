package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// InboxIdle is how long "volo inbox" waits for more after the last delivery.
const InboxIdle = 3 * time.Second

func parseUser(s string) (ident.UserID, error) {
	u, err := ident.ParseUserID(s)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("user %q: not a user ID (usernames do not exist yet): %w", s, err)
	}
	return u, nil
}

// openChat opens the client and its chat store with the passphrase.
func (r *runner) openChat() (*client.Chat, error) {
	c, err := r.open("")
	if err != nil {
		return nil, err
	}
	pass, err := r.passphrase(false)
	if err != nil {
		return nil, err
	}
	return c.OpenChat(pass)
}

// explainSend turns send failures into what a person can act on.
func explainSend(err error) error {
	switch {
	case errors.Is(err, wire.ErrMailboxFull):
		return fmt.Errorf("the recipient's mailbox is full: they must come online and read it first (%w)", err)
	case errors.Is(err, client.ErrNoQuorum):
		return fmt.Errorf("too few relay nodes stored the message; try again later (%w)", err)
	case client.IsCode(err, client.CodeUserNotFound):
		return fmt.Errorf("no such user on the network (%w)", err)
	}
	return err
}

func (r *runner) printMessage(m client.ChatMessage) {
	who := "them"
	if m.Outgoing {
		who = "me"
	}
	fmt.Fprintf(r.stdout, "%s  %s  %-4s  %s\n", m.Sent.Local().Format("2006-01-02 15:04:05"), m.Peer, who, m.Text)
}

func (r *runner) sendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "send USER TEXT",
		Short: "Send a message to a user",
		Long: `send encrypts TEXT for every device of USER (a user ID) and for your own other
devices, and hands it to the node, which stores it on the recipients' relay
nodes. It returns once a quorum of relays has it on disk; the recipient gets
it when online. The message is kept in this device's encrypted history.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer, err := parseUser(args[0])
			if err != nil {
				return err
			}
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			if err := ch.Connect(cmd.Context()); err != nil {
				return err
			}
			rep, err := ch.Send(cmd.Context(), peer, args[1])
			if err != nil {
				return explainSend(err)
			}
			fmt.Fprintf(r.stdout, "Sent to %d devices.\n", rep.Devices)
			return nil
		},
	}
}

func (r *runner) inboxCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inbox",
		Short: "Fetch and show the messages waiting for this device",
		Long: `inbox connects to the node, receives what the relays hold for this device,
decrypts it, stores it in the encrypted history, acknowledges it (the relays
then delete it) and prints the new messages. It ends when nothing more comes
for a few seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			msgs, err := ch.Fetch(cmd.Context(), InboxIdle)
			for _, m := range msgs {
				r.printMessage(m)
			}
			if err != nil {
				return err
			}
			if len(msgs) == 0 {
				fmt.Fprintln(r.stdout, "No new messages.")
			}
			return nil
		},
	}
}

func (r *runner) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history USER",
		Short: "Show your conversation with a user, from this device's history",
		Long:  `history prints the conversation with USER kept in this device's encrypted history; it does not contact the node.`,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer, err := parseUser(args[0])
			if err != nil {
				return err
			}
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			h := ch.History(peer)
			if len(h) == 0 {
				fmt.Fprintln(r.stdout, "No messages with this user.")
			}
			for _, m := range h {
				r.printMessage(m)
			}
			return nil
		},
	}
}

func (r *runner) chatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chat USER",
		Short: "Chat with a user interactively",
		Long: `chat stays connected to the node: every line you type is sent to USER, and
messages from USER (and those your other devices send) are shown as soon as
they arrive. End with Ctrl-D or Ctrl-C.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer, err := parseUser(args[0])
			if err != nil {
				return err
			}
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			var mu sync.Mutex
			ch.OnMessage(func(m client.ChatMessage) {
				if m.Peer.Equal(peer) {
					mu.Lock()
					r.printMessage(m)
					mu.Unlock()
				}
			})
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- ch.Run(ctx) }()
			fmt.Fprintf(r.stderr, "Chatting with %s. Type a line to send it; Ctrl-D ends.\n", peer)
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(r.stdin)
				sc.Buffer(make([]byte, 64<<10), client.MaxTextSize)
				for sc.Scan() {
					select {
					case lines <- sc.Text():
					case <-ctx.Done():
						return
					}
				}
			}()
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						cancel()
						<-runErr
						return nil
					}
					if strings.TrimSpace(line) == "" {
						continue
					}
					if _, err := ch.Send(ctx, peer, line); err != nil {
						fmt.Fprintln(r.stderr, "not sent:", explainSend(err))
					}
				case err := <-runErr:
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
		},
	}
}
