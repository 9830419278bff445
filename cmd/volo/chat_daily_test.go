package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/volo-chat/volo/client"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/node"
)

// people registers one CLI per name on the nodes given (round robin) and
// waits until each sees the others' chains; it returns the CLIs and their
// user IDs.
func people(t *testing.T, urls []string, names ...string) ([]*cli, []string) {
	t.Helper()
	root := t.TempDir()
	var clis []*cli
	var users []string
	for i, name := range names {
		c := newCLI(t, filepath.Join(root, name), map[string]string{EnvNode: urls[i%len(urls)], EnvPassphrase: "passphrase of " + name})
		out, err := c.run(t.Context(), "register")
		if err != nil {
			t.Fatalf("register %s: %v\n%s", name, err, out)
		}
		clis, users = append(clis, c), append(users, field(t, userLine, out))
	}
	for i, c := range clis {
		for j, u := range users {
			if i != j {
				c.waitOutput(names[j]+"'s chain", func(s string) bool { return strings.Contains(s, "verified") }, "lookup", u)
			}
		}
	}
	return clis, users
}

// chatting runs "volo chat args..." for c in the background, reading what
// the test writes to the returned pipe; done gets its error when it ends.
func chatting(t *testing.T, c *cli, args ...string) (typing *io.PipeWriter, done chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	e := c.env
	e.stdin = pr
	done = make(chan error, 1)
	go func() {
		root := newRootCmd(e)
		root.SetArgs(append([]string{"chat"}, args...))
		done <- root.ExecuteContext(t.Context())
		pr.Close()
	}()
	t.Cleanup(func() { pw.Close() })
	return pw, done
}

// waitText waits until out holds every text.
func waitText(t *testing.T, what string, out fmt.Stringer, texts ...string) {
	t.Helper()
	tstest.WaitFor(t, e2eTimeout, func() error {
		s := out.String()
		for _, text := range texts {
			if !strings.Contains(s, text) {
				return fmt.Errorf("%s: no %q in:\n%s", what, text, s)
			}
		}
		return nil
	})
}

// Alice chats with Bob in "volo chat BOB" while Carol writes to her: the
// chat shows Carol's message with her ID; a second chat of Alice's device
// refuses to start; "volo chats" then lists both conversations, newest
// first, nothing unseen; "volo inbox" has nothing new (the chat showed
// it). Small things: an empty message is refused, a note to oneself with
// one device says where it went, counts are singular.
func TestCLIChatFollowsEveryConversation(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	clis, users := people(t, []string{nw.Nodes[0].APIURL()}, "alice", "bob", "carol")
	alice, bob, carol := clis[0], clis[1], clis[2]
	userA, userB, userC := users[0], users[1], users[2]

	typing, done := chatting(t, alice, userB)
	waitText(t, "alice's chat", alice.env.stderr.(*syncBuffer), "Connected to")
	if out, err := carol.run(t.Context(), "send", userA, "hi alice, carol here"); err != nil || !strings.Contains(out, "Sent to 1 device.") {
		t.Fatalf("carol's send: %v\n%s", err, out)
	}
	waitText(t, "alice's chat", alice.stdout, userC+"  them  hi alice, carol here")
	fmt.Fprintln(typing, "hello bob")
	bob.waitOutput("alice's line", func(s string) bool { return strings.Contains(s, "hello bob") }, "inbox")

	if _, err := alice.run(t.Context(), "chat"); err == nil || !strings.Contains(err.Error(), "another volo command") {
		t.Fatalf("a second chat of alice's device: %v", err)
	}
	typing.Close()
	if err := <-done; err != nil {
		t.Fatalf("chat ended with %v", err)
	}

	out, err := alice.run(t.Context(), "chats")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 3 || !strings.HasPrefix(rows[1], userB) || !strings.HasPrefix(rows[2], userC) ||
		!strings.Contains(rows[1], "me: hello bob") || !strings.Contains(rows[2], "them: hi alice, carol here") {
		t.Fatalf("chats:\n%s", out)
	}
	for _, r := range rows[1:] {
		if f := strings.Fields(r); f[3] != "0" || f[4] != "0" {
			t.Fatalf("chats: unseen or pending in %q", r)
		}
	}
	if out, err := alice.run(t.Context(), "inbox"); err != nil || !strings.Contains(out, "No new messages.") {
		t.Fatalf("inbox after the chat showed everything: %v\n%s", err, out)
	}
	// A conversation named by the start of the ID.
	if out, err := alice.run(t.Context(), "history", userC[:12]); err != nil || !strings.Contains(out, "hi alice, carol here") {
		t.Fatalf("history by prefix: %v\n%s", err, out)
	}

	for _, empty := range []string{"", "   ", "\n\t"} {
		if out, err := bob.run(t.Context(), "send", userA, empty); err == nil || !strings.Contains(err.Error(), "empty message") {
			t.Fatalf("send %q: %v\n%s", empty, err, out)
		}
	}
	if out, err := carol.run(t.Context(), "send", userC, "a note to myself"); err != nil || !strings.Contains(out, "Saved in your history (you have no other device") {
		t.Fatalf("note to oneself: %v\n%s", err, out)
	}
}

// "volo inbox" shows what the user has not seen yet, and only that.
func TestCLIInboxShowsUnseen(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	clis, users := people(t, []string{nw.Nodes[0].APIURL()}, "alice", "bob")
	alice, bob := clis[0], clis[1]
	if _, err := bob.run(t.Context(), "send", users[0], "first"); err != nil {
		t.Fatal(err)
	}
	alice.waitOutput("bob's message", func(s string) bool { return strings.Contains(s, "first") }, "inbox")
	if out, err := alice.run(t.Context(), "inbox"); err != nil || !strings.Contains(out, "No new messages.") {
		t.Fatalf("second inbox: %v\n%s", err, out)
	}
	if _, err := bob.run(t.Context(), "send", users[0], "second"); err != nil {
		t.Fatal(err)
	}
	out := alice.waitOutput("bob's second message", func(s string) bool { return strings.Contains(s, users[1]+"  them  second") }, "inbox")
	if strings.Contains(out, "first") {
		t.Fatalf("inbox shows a message already seen:\n%s", out)
	}
}

// Long messages: "send USER -" and "--file" take up to client.MaxTextSize
// bytes and refuse one more with the limit in the error; "volo chat <
// file" refuses a line over the limit, says so, and sends the lines after
// it.
func TestCLILongMessages(t *testing.T) {
	nw := testnet.New(t, 1, testnet.Configure(func(_ int, cfg *node.Config) {
		cfg.Registry.OpenRegistration = true
	}))
	clis, users := people(t, []string{nw.Nodes[0].APIURL()}, "alice", "bob")
	alice, bob := clis[0], clis[1]
	userB := users[1]
	long := strings.Repeat("0123456789abcdef", client.MaxTextSize/16+1)[:client.MaxTextSize]

	alice.env.stdin = strings.NewReader(long)
	if out, err := alice.run(t.Context(), "send", userB, "-"); err != nil || !strings.Contains(out, "Sent to 1 device.") {
		t.Fatalf("send - of %d bytes: %v\n%s", len(long), err, out)
	}
	alice.env.stdin = strings.NewReader(long + "x")
	if _, err := alice.run(t.Context(), "send", userB, "-"); err == nil || !strings.Contains(err.Error(), strconv.Itoa(client.MaxTextSize)) {
		t.Fatalf("send - of one byte more: %v", err)
	}
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte("line one\nline two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := alice.run(t.Context(), "send", userB, "--file", file); err != nil || !strings.Contains(out, "Sent to 1 device.") {
		t.Fatalf("send --file: %v\n%s", err, out)
	}
	if err := os.WriteFile(file, []byte("\xff\xfe binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.run(t.Context(), "send", userB, "--file", file); err == nil || !strings.Contains(err.Error(), "not UTF-8") {
		t.Fatalf("send --file of binary: %v", err)
	}

	alice.env.stdin = strings.NewReader(strings.Repeat("y", 1<<20) + "\nafter the long line\n")
	if out, err := alice.run(t.Context(), "chat", userB); err != nil {
		t.Fatalf("chat < file: %v\n%s", err, out)
	}
	waitText(t, "alice's chat", alice.env.stderr.(*syncBuffer), "not sent", strconv.Itoa(client.MaxTextSize))
	out := bob.waitOutput("alice's messages", func(s string) bool { return strings.Contains(s, "after the long line") }, "inbox")
	if !strings.Contains(out, long) && !strings.Contains(bob.stdout.String(), long) {
		t.Fatal("bob did not get the message of the largest size")
	}
	if h, _ := bob.run(t.Context(), "history", users[0]); !strings.Contains(h, "line one\nline two") {
		t.Fatalf("the file's text is not whole in bob's history:\n%.300s", h)
	}
}
