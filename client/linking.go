package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/wire"
)

// LinkTimeout bounds a whole linking exchange, on each side: the node
// deletes a rendezvous mailbox 10 minutes after its first message
// (docs/api.md).
const LinkTimeout = 10 * time.Minute

// Errors of linking. Each but ErrBadLinkReply ends with the existing
// device showing a new code.
var (
	// ErrChainMoved: the user's chain changed after the linking code was
	// shown.
	ErrChainMoved = errors.New("client: the chain changed during linking (show a new code)")
	// ErrLinkingExpired: the exchange did not finish within LinkTimeout.
	ErrLinkingExpired = errors.New("client: the linking code expired")
	// ErrLinkingCodeUsed: another device answered the code already (a code
	// adds one device).
	ErrLinkingCodeUsed = errors.New("client: the linking code was already used by another device")
	// ErrNoRendezvous: a wait on the code's rendezvous at the node ended
	// with nothing in it: no device is showing the code there (the code is
	// for another node, it expired, or the node restarted since).
	ErrNoRendezvous = errors.New("client: no device is showing this linking code at the node")
)

// mailbox is one side's view of a linking rendezvous: it seals what it
// sends, skips what it posted itself and opens the peer's messages in order.
type mailbox struct {
	api     *API
	role    e2ee.LinkingRole
	sess    *e2ee.LinkingSession
	rid     ident.RendezvousID
	after   int64
	posted  map[int64]bool
	pending []wire.RendezvousMessage
}

// usedElsewhere reports whether what is pending holds an authentic
// message beyond the exchange so far: the code was answered by another
// device. Junk is not counted.
func (m *mailbox) usedElsewhere() bool {
	for _, msg := range m.pending {
		if m.posted[int64(msg.Seq)] {
			continue
		}
		if _, err := m.sess.Open(msg.Data); err == nil || errors.Is(err, e2ee.ErrLinkingReflected) {
			return true
		}
	}
	return false
}

func newMailbox(api *API, code e2ee.LinkingCode, role e2ee.LinkingRole) (*mailbox, error) {
	sess, err := e2ee.NewLinkingSession(code, role)
	if err != nil {
		return nil, fmt.Errorf("client: linking: %w", err)
	}
	return &mailbox{api: api, role: role, sess: sess, rid: sess.Rendezvous(), after: -1, posted: map[int64]bool{}}, nil
}

func (m *mailbox) send(ctx context.Context, plaintext []byte) error {
	sealed, err := m.sess.Seal(plaintext)
	if err != nil {
		return fmt.Errorf("client: linking: %w", err)
	}
	seq, err := m.api.PostRendezvous(ctx, m.rid, sealed)
	if err != nil {
		return err
	}
	m.posted[seq] = true
	return nil
}

// recv waits for the peer's next message. A message that does not open
// (another code's key S, a replay, tampering, junk claiming this side's
// role) is skipped: anyone can post to a rendezvous, and such a message
// never comes from the peer. A message sealed with the code's key by
// another device of this side's role means the code was used by someone
// else too (ErrLinkingCodeUsed).
func (m *mailbox) recv(ctx context.Context) ([]byte, error) {
	for {
		for len(m.pending) > 0 {
			msg := m.pending[0]
			m.pending = m.pending[1:]
			if m.posted[int64(msg.Seq)] {
				continue
			}
			pt, err := m.sess.Open(msg.Data)
			if errors.Is(err, e2ee.ErrLinkingReflected) {
				return nil, fmt.Errorf("%w: message %d in the rendezvous comes from another %s", ErrLinkingCodeUsed, msg.Seq, m.role)
			}
			if err != nil {
				continue // not the peer's
			}
			return pt, nil
		}
		got, err := m.poll(ctx)
		if err != nil {
			return nil, err
		}
		if !got {
			if err := sleep(ctx, PollInterval); err != nil {
				return nil, fmt.Errorf("client: waiting for the other device: %w", err)
			}
		}
	}
}

// poll long-polls the rendezvous once and queues what is new; it reports
// whether anything was.
func (m *mailbox) poll(ctx context.Context) (bool, error) {
	msgs, err := m.api.GetRendezvous(ctx, m.rid, m.after)
	if err != nil {
		return false, err
	}
	got := false
	for _, msg := range msgs {
		// Sequence numbers are 32-bit (docs/api.md); a larger one
		// would wrap negative and is ignored.
		if seq := int64(msg.Seq); seq > m.after {
			m.after = seq
			m.pending = append(m.pending, msg)
			got = true
		}
	}
	return got, nil
}

// withLinkTimeout bounds a linking exchange by LinkTimeout.
func withLinkTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, LinkTimeout, ErrLinkingExpired)
}

// linkingExpired turns an error that the end of LinkTimeout caused into
// ErrLinkingExpired.
func linkingExpired(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), ErrLinkingExpired) {
		return fmt.Errorf("%w: linking did not finish within %s (show a new code)", ErrLinkingExpired, LinkTimeout)
	}
	return err
}

// LinkShow runs the existing device's side of adding a new device: it makes
// a linking code naming this client's node, hands it to show (to display as
// a QR code and as text), sends the chain head through the rendezvous,
// verifies the new device's signed request, signs the add-device link and
// sends it back, then waits until the node's chain holds the new device.
// It returns the new device's ID. The whole exchange is bounded by
// LinkTimeout (ErrLinkingExpired).
func (c *Client) LinkShow(ctx context.Context, passphrase []byte, show func(e2ee.LinkingCode) error) (_ ident.DeviceID, err error) {
	ctx, cancel := withLinkTimeout(ctx)
	defer cancel()
	defer func() { err = linkingExpired(ctx, err) }()
	keys, st, set, err := c.ownChain(ctx, passphrase)
	if err != nil {
		return ident.DeviceID{}, err
	}
	code, err := e2ee.NewLinkingCode(c.rand)
	if err != nil {
		return ident.DeviceID{}, fmt.Errorf("client: linking code: %w", err)
	}
	code.Node = c.api.URL()
	mb, err := newMailbox(c.api, code, e2ee.LinkingExistingDevice)
	if err != nil {
		return ident.DeviceID{}, err
	}
	if err := show(code); err != nil {
		return ident.DeviceID{}, err
	}
	if err := mb.send(ctx, set.Head().Encode()); err != nil {
		return ident.DeviceID{}, err
	}
	data, err := mb.recv(ctx)
	if err != nil {
		return ident.DeviceID{}, err
	}
	req, err := ident.DecodeAddDeviceRequest(data)
	if err != nil {
		return ident.DeviceID{}, fmt.Errorf("client: add-device request: %w", err)
	}
	link, err := e2ee.NewAddDevice(set, keys, req, c.now())
	if err != nil {
		return ident.DeviceID{}, fmt.Errorf("client: add-device request: %w", err)
	}
	if err := mb.send(ctx, link.Encode()); err != nil {
		return ident.DeviceID{}, err
	}
	newID := req.Device.ID()
	for {
		set, links, err := c.fetchChain(ctx, c.api, set.User())
		if err != nil {
			return ident.DeviceID{}, err
		}
		if st, err = c.acceptOwnChain(st, set, links); err != nil {
			return ident.DeviceID{}, err
		}
		if _, ok := set.Lookup(newID); ok {
			return newID, nil
		}
		if err := sleep(ctx, PollInterval); err != nil {
			return ident.DeviceID{}, fmt.Errorf("client: waiting for the new device %s in the chain: %w", newID, err)
		}
	}
}

// LinkJoin runs the new device's side: this client's home must be empty.
// It reads the linking code (text or QR form), talks to the rendezvous of
// the node the code names (or this client's node), generates the device's
// keys, sends its signed request, checks that the link it gets back adds
// exactly this device right after the head it signed for, saves the device
// in the home and submits the link to this client's node.
//
// The existing device posts its chain head as soon as it shows the code,
// so a first wait on the rendezvous (one long poll) that ends empty means
// no device is showing the code at that node (ErrNoRendezvous). A
// rendezvous that holds authentic messages beyond the head already was
// answered by another device (ErrLinkingCodeUsed); junk others posted
// there is skipped. The whole exchange is bounded by
// LinkTimeout (ErrLinkingExpired). When LinkJoin fails, the home holds
// nothing it made: no file, and no directory it created.
func (c *Client) LinkJoin(ctx context.Context, codeText string, passphrase []byte) (_ Identity, err error) {
	if len(passphrase) == 0 {
		return Identity{}, ErrEmptyPassphrase
	}
	if has, err := c.home.HasDevice(); err != nil {
		return Identity{}, err
	} else if has {
		return Identity{}, fmt.Errorf("%w: %s (link join needs an empty home)", ErrHomeInUse, c.home.Dir())
	}
	code, err := e2ee.ParseLinkingCode(codeText)
	if err != nil {
		return Identity{}, fmt.Errorf("client: linking code: %w", err)
	}
	ctx, cancel := withLinkTimeout(ctx)
	defer cancel()
	defer func() { err = linkingExpired(ctx, err) }()
	rv := c.api
	if code.Node != "" {
		if rv, err = NewAPI(code.Node, c.hc); err != nil {
			return Identity{}, fmt.Errorf("client: the linking code's node: %w", err)
		}
	}
	mb, err := newMailbox(rv, code, e2ee.LinkingNewDevice)
	if err != nil {
		return Identity{}, err
	}
	if got, err := mb.poll(ctx); err != nil {
		return Identity{}, err
	} else if !got {
		return Identity{}, fmt.Errorf("%w: nothing came from %s", ErrNoRendezvous, rv.URL())
	}
	data, err := mb.recv(ctx)
	if err != nil {
		return Identity{}, err
	}
	if mb.usedElsewhere() {
		return Identity{}, fmt.Errorf("%w: the rendezvous holds another device's messages after the chain head", ErrLinkingCodeUsed)
	}
	head, err := ident.DecodeChainHead(data)
	if err != nil {
		return Identity{}, fmt.Errorf("client: chain head: %w", err)
	}
	keys, err := e2ee.GenerateDeviceKeys(c.rand)
	if err != nil {
		return Identity{}, fmt.Errorf("client: device keys: %w", err)
	}
	req, err := e2ee.NewAddDeviceRequest(head, keys)
	if err != nil {
		return Identity{}, fmt.Errorf("client: add-device request: %w", err)
	}
	if err := mb.send(ctx, req.Encode()); err != nil {
		return Identity{}, err
	}
	if data, err = mb.recv(ctx); err != nil {
		return Identity{}, err
	}
	link, err := ident.DecodeLink(data)
	if err != nil {
		return Identity{}, fmt.Errorf("client: add-device link: %w", err)
	}
	if link.Kind != ident.LinkAddDevice || link.Seq != head.Version+1 || !link.Prev.Equal(head.Link) || !link.Device.Equal(keys.Public()) {
		return Identity{}, fmt.Errorf("%w: got %s link %d", ErrBadLinkReply, link.Kind, link.Seq)
	}
	set, links, err := c.chainAtHead(ctx, head)
	if err != nil {
		return Identity{}, err
	}
	if _, err := set.Apply(link); err != nil {
		return Identity{}, fmt.Errorf("client: add-device link: %w", err)
	}
	// The home first: a home that cannot be written fails here, before
	// the node adds a device whose keys would be lost.
	id := Identity{User: head.User, Device: keys.ID(), Node: c.api.URL()}
	st := State{User: id.User.String(), Device: id.Device.String(), Node: id.Node, Chain: append(encodeLinks(links), link.Encode())}
	undo, err := c.home.create(keys, passphrase, st)
	if err != nil {
		return Identity{}, err
	}
	if err := c.api.AppendLink(ctx, head.User, link.Encode()); err != nil {
		undo()
		return Identity{}, err
	}
	return id, nil
}

// chainAtHead fetches the verified chain of head.User from this client's
// node, waiting while the node has not caught up with head yet (the
// existing device may use another node), and checks it ends at head.
func (c *Client) chainAtHead(ctx context.Context, head ident.ChainHead) (ident.DeviceSet, []ident.Link, error) {
	for {
		set, links, err := c.fetchChain(ctx, c.api, head.User)
		switch {
		case err != nil && !IsCode(err, CodeUserNotFound):
			return ident.DeviceSet{}, nil, err
		case err == nil && set.Version() > head.Version:
			return ident.DeviceSet{}, nil, fmt.Errorf("%w: the code was shown at version %d, the chain is at %d", ErrChainMoved, head.Version, set.Version())
		case err == nil && set.Version() == head.Version:
			if h := set.Head(); !h.Link.Equal(head.Link) {
				return ident.DeviceSet{}, nil, fmt.Errorf("%w: the node's link %d is %s, the other device's is %s", ErrChainForked, head.Version, h.Link, head.Link)
			}
			return set, links, nil
		}
		if err := sleep(ctx, PollInterval); err != nil {
			return ident.DeviceSet{}, nil, fmt.Errorf("client: waiting for %s to reach version %d of %s: %w", c.api.URL(), head.Version, head.User, err)
		}
	}
}

// LinkingCodeNode returns the node address a linking code names ("" if it
// names none, as the typed text form never does).
func LinkingCodeNode(codeText string) (string, error) {
	code, err := e2ee.ParseLinkingCode(codeText)
	if err != nil {
		return "", fmt.Errorf("client: linking code: %w", err)
	}
	return code.Node, nil
}
