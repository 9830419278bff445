package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// InboxIdle is how long "volo inbox" waits for more after the last delivery.
const InboxIdle = 3 * time.Second

// minPeerPrefix is the shortest prefix of a user ID that names a
// conversation.
const minPeerPrefix = 6

// parseUser reads a user ID.
func parseUser(s string) (ident.UserID, error) {
	u, err := ident.ParseUserID(s)
	if err != nil {
		return ident.UserID{}, fmt.Errorf("user %q: not a user ID (usernames do not exist yet): %w", s, err)
	}
	return u, nil
}

// resolvePeer reads a user ID, or the start of the user ID of one of the
// conversations in history (at least minPeerPrefix characters).
func resolvePeer(ch *client.Chat, s string) (ident.UserID, error) {
	if u, err := ident.ParseUserID(s); err == nil {
		return u, nil
	}
	if len(s) >= minPeerPrefix {
		var found []ident.UserID
		for _, c := range ch.ConversationList() {
			if strings.HasPrefix(c.Peer.String(), strings.ToLower(s)) {
				found = append(found, c.Peer)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return ident.UserID{}, fmt.Errorf("user %q: %d of your conversations start so: give more of the ID", s, len(found))
		}
	}
	_, err := parseUser(s)
	return ident.UserID{}, fmt.Errorf("%w (or the start of one from \"volo chats\", %d characters at least)", err, minPeerPrefix)
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
	ch, err := c.OpenChat(pass)
	if errors.Is(err, client.ErrChatInUse) {
		who := "another volo command"
		if _, pid, ok := strings.Cut(err.Error(), "(process "); ok {
			who += " (process " + pid
		}
		return nil, &hint{msg: who + " has this device's history open (chat, inbox, send...): use that one, or end it first", err: err}
	}
	return ch, err
}

// explainSend turns send failures into what a person can act on.
func explainSend(err error) error {
	switch {
	case errors.Is(err, client.ErrEmptyText):
		return errors.New("empty message: nothing to send")
	case errors.Is(err, client.ErrTextTooLarge):
		return fmt.Errorf("%w (send long text with --file; attachments are not supported yet)", err)
	case errors.Is(err, client.ErrNotSent):
		cause := strings.TrimPrefix(err.Error(), client.ErrNotSent.Error()+": ")
		var nu *client.NodeUnreachableError
		if errors.As(err, &nu) {
			cause = explain(nu)
		}
		return &hint{msg: fmt.Sprintf("not sent yet: %s; the message is kept in this device's outbox and sent the next time \"volo chat\", \"volo inbox\" or \"volo send\" reaches the node (do not send it again)", cause), err: err}
	case errors.Is(err, wire.ErrMailboxFull):
		return fmt.Errorf("the recipient's mailbox is full: they must come online and read it first (%w)", err)
	case errors.Is(err, client.ErrNoQuorum):
		return fmt.Errorf("too few relay nodes stored the message; try again later (%w)", err)
	case client.IsCode(err, client.CodeUserNotFound):
		return fmt.Errorf("no such user on the network (%w)", err)
	}
	return err
}

// printMessage prints one message: time, conversation, who, text, and the
// state of this user's messages that are not simply sent.
func (r *runner) printMessage(m client.ChatMessage) {
	who := "them"
	state := ""
	if m.Outgoing {
		who = "me"
		switch m.State {
		case client.StatePending:
			state = "  [pending]"
		case client.StateDelivered:
			state = "  [delivered]"
		case client.StateFailed:
			state = "  [failed: " + m.Failure + "]"
		}
	}
	fmt.Fprintf(r.stdout, "%s  %s  %-4s  %s%s\n", m.Sent.Local().Format("2006-01-02 15:04:05"), m.Peer, who, m.Text, state)
}

// plural returns "1 device" or "n devices".
func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}

// messageText reads what send sends: the argument, standard input ("-")
// or a file, as UTF-8 text of at most client.MaxTextSize bytes.
func (r *runner) messageText(args []string, file string) (string, error) {
	var src io.Reader
	var what string
	switch {
	case file != "" && len(args) > 1:
		return "", errors.New("give the text or --file, not both")
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		src, what = f, file
	case len(args) < 2:
		return "", errors.New("no text: give it as an argument, - to read standard input, or --file FILE")
	case args[1] == "-":
		src, what = r.stdin, "standard input"
	default:
		return args[1], nil
	}
	b, err := io.ReadAll(io.LimitReader(src, client.MaxTextSize+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > client.MaxTextSize {
		return "", fmt.Errorf("%s: %w: more than %d bytes (send long text in parts; attachments are not supported yet)", what, client.ErrTextTooLarge, client.MaxTextSize)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not UTF-8 text (attachments are not supported yet)", what)
	}
	return string(b), nil
}

func (r *runner) sendCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "send USER [TEXT | -]",
		Short: "Send a message to a user",
		Long: fmt.Sprintf(`send encrypts a message for every device of USER (a user ID, or the start of
one from "volo chats") and for your own other devices, and hands it to the
node, which stores it on the recipients' relay nodes. It returns once a
quorum of relays has it on disk; the recipient gets it when online.

The message is TEXT, or standard input with -, or the file named by --file:
UTF-8 text of at most %d bytes; an empty message is refused. It enters this
device's encrypted history (and outbox) before it is sent: when the node
cannot be reached it stays there, pending, and is sent the next time
"volo chat", "volo inbox" or "volo send" reaches the node.`, client.MaxTextSize),
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := r.messageText(args, file)
			if err != nil {
				return err
			}
			if strings.TrimSpace(text) == "" {
				return explainSend(client.ErrEmptyText)
			}
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			peer, err := resolvePeer(ch, args[0])
			if err != nil {
				return err
			}
			if err := ch.Connect(cmd.Context()); err != nil {
				// Kept for later: the outbox sends it next time.
				if _, qerr := ch.Queue(peer, text); qerr != nil {
					return explainSend(qerr)
				}
				return explainSend(fmt.Errorf("%w: %w", client.ErrNotSent, err))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), client.DialTimeout)
			defer cancel()
			rep, err := ch.Send(ctx, peer, text)
			if err != nil {
				return explainSend(err)
			}
			ch.WaitSent(cmd.Context()) // older messages of the outbox sent along
			switch self := peer.Equal(ch.Self().User); {
			case rep.Devices == 0 && self:
				fmt.Fprintln(r.stdout, "Saved in your history (you have no other device to send it to).")
			case self:
				fmt.Fprintf(r.stdout, "Sent to your other %s.\n", plural(rep.Devices, "device"))
			default:
				fmt.Fprintf(r.stdout, "Sent to %s.\n", plural(rep.Devices, "device"))
			}
			switch {
			case rep.Relays == 0:
			case rep.Devices == 1:
				fmt.Fprintf(r.stdout, "Stored on %d of %d relays.\n", rep.Stored, rep.Relays)
			default:
				fmt.Fprintf(r.stdout, "Its least replicated copy is stored on %d of %d relays.\n", rep.Stored, rep.Relays)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "send the content of this UTF-8 text file")
	return cmd
}

func (r *runner) inboxCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inbox",
		Short: "Show the messages you have not seen yet, fetching new ones",
		Long: `inbox connects to the node, receives what the relays hold for this device,
decrypts it, stores it in the encrypted history and acknowledges it (the
relays then delete it); it also sends what the outbox holds. Then it prints
every message you have not seen yet, in all conversations, whichever command
fetched it (a message "volo chat" printed counts as seen), and marks them
seen. It ends when nothing more comes for a few seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			_, fetchErr := ch.Fetch(cmd.Context(), InboxIdle)
			unseen := ch.Unseen()
			for _, m := range unseen {
				r.printMessage(m)
			}
			if err := ch.MarkSeen(unseen...); err != nil {
				return err
			}
			if len(unseen) == 0 && fetchErr == nil {
				fmt.Fprintln(r.stdout, "No new messages.")
			}
			if n := len(ch.Pending()); n > 0 {
				fmt.Fprintf(r.stderr, "%s of yours not sent yet (kept in the outbox).\n", plural(n, "message"))
			}
			if fetchErr != nil {
				return fmt.Errorf("fetching new messages: %w", fetchErr)
			}
			return nil
		},
	}
}

func (r *runner) chatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chats",
		Short: "List your conversations, newest first, with unseen counts",
		Long: `chats lists the conversations in this device's history, the one with the
newest message first: the other user's ID, the time of the last message,
how many of their messages you have not seen, how many of yours are not sent
yet, and the start of the last message. It does not contact the node (run
"volo inbox" to fetch new messages).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			return r.printChats(ch.ConversationList())
		},
	}
}

func (r *runner) printChats(list []client.Conversation) error {
	if len(list) == 0 {
		fmt.Fprintln(r.stdout, "No conversations yet.")
		return nil
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tLAST\tUNSEEN\tPENDING\tLAST MESSAGE")
	for _, c := range list {
		who := "them: "
		if c.Last.Outgoing {
			who = "me: "
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Peer, c.Last.Received.Local().Format("2006-01-02 15:04"), c.Unseen, c.Pending, who+snippet(c.Last.Text, 40))
	}
	return tw.Flush()
}

// snippet is the start of text on one line, at most n characters.
func snippet(text string, n int) string {
	text = strings.Join(strings.Fields(text), " ")
	if utf8.RuneCountInString(text) <= n {
		return text
	}
	return string([]rune(text)[:n-3]) + "..."
}

func (r *runner) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history USER",
		Short: "Show your conversation with a user, from this device's history",
		Long: `history prints the conversation with USER (a user ID, or the start of one from
"volo chats") kept in this device's encrypted history, with the state of
your messages that are not simply sent ([pending], [delivered],
[failed: why]), and marks it seen. It does not contact the node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			peer, err := resolvePeer(ch, args[0])
			if err != nil {
				return err
			}
			h := ch.History(peer)
			if len(h) == 0 {
				fmt.Fprintln(r.stdout, "No messages with this user.")
			}
			for _, m := range h {
				r.printMessage(m)
			}
			return ch.MarkSeen(h...)
		},
	}
}

func (r *runner) acceptChainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "accept-chain USER",
		Short: "Accept the node's chain of a user that forks from the one verified before",
		Long: `accept-chain resolves a fork of USER's chain (a user ID) that send, chat or
devices refused: it fetches USER's chain from the node and keeps it instead
of the one this device verified before, only if it wins the fork rule
(docs/protocol.md, Fork rule): for instance a branch on which the user's
recovery key revoked a stolen device. A rollback (an older chain) or a
branch that loses the rule is refused, and sending to USER stays stopped.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, err := parseUser(args[0])
			if err != nil {
				return err
			}
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			head, err := ch.AcceptChain(cmd.Context(), user)
			if err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "Accepted the chain of user %s: version %d, head %s\n", user, head.Version, head.Link)
			return nil
		},
	}
}

func (r *runner) chatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "chat [USER]",
		Short: "Chat interactively: all your conversations, or one",
		Long: fmt.Sprintf(`chat stays connected to the node and shows every message as it arrives, in
all your conversations, with the conversation's user ID; it starts with the
messages you have not seen yet. Each line you type is sent to the current
conversation: USER if given (a user ID, or the start of one from
"volo chats"), else choose one with /to. Lines starting with / are commands:

  /to USER   send the next lines to USER
  /chats     list your conversations
  /help      list the commands

A line is queued in the outbox and sent at once when connected; when the
connection drops, chat says so, keeps your lines and sends them when it is
back. A line longer than %d bytes is refused (use "volo send --file").
Ctrl-D ends chat once the queued lines are sent (or the connection is down);
Ctrl-C ends it at once. Only one command at a time may use a device's
history: a second chat of the same device refuses to start.`, client.MaxTextSize),
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch, err := r.openChat()
			if err != nil {
				return err
			}
			defer ch.Close()
			s := &chatSession{r: r, ch: ch}
			if len(args) == 1 {
				if s.peer, err = resolvePeer(ch, args[0]); err != nil {
					return err
				}
			}
			return s.run(cmd.Context())
		},
	}
}

// chatSession is one run of "volo chat".
type chatSession struct {
	r  *runner
	ch *client.Chat

	mu        sync.Mutex // guards output and the fields below
	peer      ident.UserID
	connected bool
	queuedOff map[uint64]bool // lines queued while disconnected
	changed   chan struct{}   // a status or connection change
}

func (s *chatSession) say(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.r.stderr, format+"\n", a...)
}

func (s *chatSession) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *chatSession) run(ctx context.Context) error {
	s.queuedOff = map[uint64]bool{}
	s.changed = make(chan struct{}, 1)
	ch := s.ch
	ch.OnMessage(func(m client.ChatMessage) {
		s.mu.Lock()
		s.r.printMessage(m)
		s.mu.Unlock()
		if err := ch.MarkSeen(m); err != nil {
			s.say("could not mark a message seen: %v", err)
		}
	})
	ch.OnStatus(func(m client.ChatMessage) {
		s.mu.Lock()
		wasOff := s.queuedOff[m.Seq]
		delete(s.queuedOff, m.Seq)
		s.mu.Unlock()
		switch {
		case m.State == client.StateFailed:
			s.say("not sent to %s: %q: %s", m.Peer, snippet(m.Text, 30), m.Failure)
		case wasOff && m.State != client.StatePending:
			s.say("sent to %s: %q", m.Peer, snippet(m.Text, 30))
		}
		s.signal()
	})
	ch.OnConnection(func(ev client.ConnEvent) {
		s.mu.Lock()
		was := s.connected
		s.connected = ev.Connected
		s.mu.Unlock()
		switch {
		case ev.Connected && !was:
			if n := len(ch.Pending()); n > 0 {
				s.say("Connected to %s; sending %s from the outbox.", ev.Node, plural(n, "queued message"))
			} else {
				s.say("Connected to %s.", ev.Node)
			}
		case !ev.Connected && errors.Is(ev.Err, client.ErrSuperseded):
			s.say("Another session of this device took over the connection; this one stops.")
		case !ev.Connected:
			why := ev.Err.Error()
			switch {
			case errors.Is(ev.Err, client.ErrNodeUnreachable):
				why = "it cannot be reached"
			case errors.Is(ev.Err, client.ErrConnClosed):
				why = "the connection dropped"
			}
			s.say("Not connected to %s (%s); retrying. Lines you type are kept and sent when it is back (pick another node with --node or $%s).", ev.Node, why, EnvNode)
		}
		s.signal()
	})
	unseen := ch.Unseen()
	if len(unseen) > 0 {
		s.say("%s you have not seen:", plural(len(unseen), "message"))
		s.mu.Lock()
		for _, m := range unseen {
			s.r.printMessage(m)
		}
		s.mu.Unlock()
		if err := ch.MarkSeen(unseen...); err != nil {
			return err
		}
	}
	if s.peer.IsZero() {
		s.say("Showing all your conversations. Type /to USER to choose whom to write to, /help for commands; Ctrl-D ends.")
	} else {
		s.say("Chatting with %s. Type a line to send it, /help for commands; Ctrl-D ends.", s.peer)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- ch.Run(ctx) }()
	lines := make(chan lineOrErr)
	go readLines(ctx, s.r.stdin, client.MaxTextSize, lines)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				s.drain(ctx, runErr)
				cancel()
				<-runErr
				return nil
			}
			if l.err != nil {
				s.say("line of %d bytes or more not sent: %v", l.n, l.err)
				continue
			}
			s.line(l.text)
		case err := <-runErr:
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, client.ErrSuperseded) {
				return errors.New("another session of this device took over; this chat stopped (lines typed here after that were not sent)")
			}
			return err
		}
	}
}

// line handles one typed line: a command or a message.
func (s *chatSession) line(text string) {
	if strings.TrimSpace(text) == "" {
		return
	}
	if strings.HasPrefix(text, "//") {
		text = text[1:] // a message that starts with /
	} else if cmd, ok := strings.CutPrefix(text, "/"); ok {
		s.command(strings.Fields(cmd))
		return
	}
	s.mu.Lock()
	peer, connected := s.peer, s.connected
	s.mu.Unlock()
	if peer.IsZero() {
		s.say("No conversation chosen: type /to USER first (a user ID, or the start of one from /chats).")
		return
	}
	m, err := s.ch.Queue(peer, text)
	if err != nil {
		s.say("not sent: %v", explainSend(err))
		return
	}
	if !connected {
		s.mu.Lock()
		s.queuedOff[m.Seq] = true
		s.mu.Unlock()
		s.say("(queued: not connected; it is sent when the connection is back)")
	}
}

func (s *chatSession) command(f []string) {
	if len(f) == 0 {
		f = []string{"help"}
	}
	switch f[0] {
	case "to":
		if len(f) != 2 {
			s.say("usage: /to USER")
			return
		}
		peer, err := resolvePeer(s.ch, f[1])
		if err != nil {
			s.say("%v", err)
			return
		}
		s.mu.Lock()
		s.peer = peer
		s.mu.Unlock()
		s.say("Now writing to %s.", peer)
	case "chats":
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.r.printChats(s.ch.ConversationList()); err != nil {
			fmt.Fprintln(s.r.stderr, err)
		}
	case "help":
		s.say("/to USER   send the next lines to USER (a user ID or the start of one)\n/chats     list your conversations\n/help      this list\nCtrl-D ends chat.")
	default:
		s.say("unknown command /%s: /help lists them (start a message with // to send a line beginning with /)", f[0])
	}
}

// drain waits, at the end of input, until the queued lines are sent or
// the connection is down.
func (s *chatSession) drain(ctx context.Context, runErr chan error) {
	for {
		pending := len(s.ch.Pending())
		s.mu.Lock()
		connected := s.connected
		s.mu.Unlock()
		if pending == 0 {
			// The receipts of what came last go out too.
			if err := s.ch.Flush(ctx); err != nil && connected {
				s.say("could not send everything: %v", err)
			}
			return
		}
		if !connected {
			s.say("%s not sent yet: kept in the outbox and sent the next time volo chat, inbox or send reaches the node.", plural(pending, "message"))
			return
		}
		select {
		case <-s.changed:
		case err := <-runErr:
			runErr <- err
			return
		case <-ctx.Done():
			return
		}
	}
}

// lineOrErr is a line of input, or a line too long (n bytes read of it).
type lineOrErr struct {
	text string
	n    int
	err  error
}

// readLines sends the lines of r (without their end of line) to out,
// closing it at the end of input. A line longer than max bytes is read to
// its end and reported as an error instead.
func readLines(ctx context.Context, r io.Reader, max int, out chan<- lineOrErr) {
	defer close(out)
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		var buf []byte
		long := false
		n := 0
		for {
			chunk, err := br.ReadSlice('\n')
			n += len(chunk)
			if !long {
				buf = append(buf, chunk...)
				if len(buf) > max+2 { // room for "\r\n"
					long, buf = true, nil
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil && n == 0 {
				return
			}
			break
		}
		l := lineOrErr{n: n}
		if long {
			l.err = fmt.Errorf("%w: limit %d bytes (use \"volo send USER --file FILE\")", client.ErrTextTooLarge, max)
		} else {
			text := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
			if len(text) > max {
				l.err = fmt.Errorf("%w: %d bytes, limit %d (use \"volo send USER --file FILE\")", client.ErrTextTooLarge, len(text), max)
			} else {
				l.text = text
			}
		}
		select {
		case out <- l:
		case <-ctx.Done():
			return
		}
	}
}
