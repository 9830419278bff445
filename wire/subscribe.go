package wire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// DomainSubscribe signs a subscribe token.
const DomainSubscribe = "volo/v1/subscribe"

// Subscribe token limits.
const (
	// SubscribeTokenLifetime is how long after its Time a subscribe token
	// opens a subscription (and MaxClockSkew more for clocks that differ).
	SubscribeTokenLifetime = 24 * time.Hour
	// SubscribeTokenRefresh is how often a device sends its node a new
	// token (FrameToken), well inside SubscribeTokenLifetime.
	SubscribeTokenRefresh = SubscribeTokenLifetime / 4
	// DeliveryVerifierSize is the size of a delivery key and of its
	// verifier, SHA-256 of the key.
	DeliveryVerifierSize = sha256.Size
	// MaxSubscribeTokenSize bounds an encoded subscribe token.
	MaxSubscribeTokenSize = 2048
	// maxNodeIDSize bounds the peer ID text of a token.
	maxNodeIDSize = 128
)

// DeliveryVerifier is the verifier of a delivery key: its SHA-256.
func DeliveryVerifier(key []byte) []byte {
	h := sha256.Sum256(key)
	return h[:]
}

// ErrBadToken reports a subscribe token that does not decode, does not
// verify, names another node or is not fresh.
var ErrBadToken = errors.New("wire: bad subscribe token")

// SubscribeToken is a device's permission for one node to read its
// mailbox: signed by the device (DomainSubscribe) over the device, the
// node's peer ID and a time. It also registers the device's delivery
// verifier with its relays.
type SubscribeToken struct {
	Device ident.DeviceID
	// Node is the peer ID (text) of the node the device is connected to:
	// the only node that may subscribe with the token.
	Node string
	// Time is when the device made the token (millisecond precision).
	Time time.Time
	// Delivery is SHA-256 of the device's delivery key, or nil.
	Delivery []byte
	// Public is the device's public keys; its ID is Device.
	Public ident.DevicePublic
	Sig    []byte
}

type subscribeSigned struct {
	Device   ident.DeviceID `cbor:"1,keyasint"`
	Node     string         `cbor:"2,keyasint"`
	Time     uint64         `cbor:"3,keyasint"`
	Delivery []byte         `cbor:"4,keyasint,omitempty"`
}

type subscribeWire struct {
	Device   ident.DeviceID `cbor:"1,keyasint"`
	Node     string         `cbor:"2,keyasint"`
	Time     uint64         `cbor:"3,keyasint"`
	Delivery []byte         `cbor:"4,keyasint,omitempty"`
	Public   []byte         `cbor:"5,keyasint"`
	Sig      []byte         `cbor:"6,keyasint"`
}

// SignedBytes is what the device signs: the canonical CBOR map of keys
// 1 to 4 of the token's encoding.
func (t SubscribeToken) SignedBytes() []byte {
	b, _ := encMode.Marshal(subscribeSigned{t.Device, t.Node, uint64(t.Time.UnixMilli()), t.Delivery})
	return b
}

// NewSubscribeToken returns keys' token for node at now, registering
// delivery (SHA-256 of the delivery key, or nil).
func NewSubscribeToken(keys e2ee.DeviceKeys, node string, now time.Time, delivery []byte) SubscribeToken {
	t := SubscribeToken{
		Device: keys.ID(), Node: node, Time: time.UnixMilli(now.UnixMilli()).UTC(),
		Delivery: delivery, Public: keys.Public(),
	}
	t.Sig = keys.Signing.Sign(DomainSubscribe, t.SignedBytes())
	return t
}

// Encode returns the token's canonical CBOR encoding.
func (t SubscribeToken) Encode() ([]byte, error) {
	if t.Public.Signing.IsZero() || t.Public.Messaging.IsZero() {
		return nil, fmt.Errorf("%w: no device keys", ErrBadToken)
	}
	return encMode.Marshal(subscribeWire{t.Device, t.Node, uint64(t.Time.UnixMilli()), t.Delivery, t.Public.Encode(), t.Sig})
}

// DecodeSubscribeToken decodes a token and checks that it is canonical,
// that its keys are its device's and that the device signed it. Whether
// it is fresh and for which node is CheckFor's.
func DecodeSubscribeToken(b []byte) (SubscribeToken, error) {
	if len(b) > MaxSubscribeTokenSize {
		return SubscribeToken{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadToken, len(b), MaxSubscribeTokenSize)
	}
	var w subscribeWire
	if err := decMode.Unmarshal(b, &w); err != nil {
		return SubscribeToken{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	switch {
	case w.Device.IsZero():
		return SubscribeToken{}, fmt.Errorf("%w: no device", ErrBadToken)
	case w.Node == "" || len(w.Node) > maxNodeIDSize:
		return SubscribeToken{}, fmt.Errorf("%w: node ID of %d bytes", ErrBadToken, len(w.Node))
	case w.Time > 1<<53:
		return SubscribeToken{}, fmt.Errorf("%w: time out of range", ErrBadToken)
	case w.Delivery != nil && len(w.Delivery) != DeliveryVerifierSize:
		return SubscribeToken{}, fmt.Errorf("%w: delivery verifier of %d bytes", ErrBadToken, len(w.Delivery))
	}
	pub, err := ident.DecodeDevicePublic(w.Public)
	if err != nil {
		return SubscribeToken{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	if !pub.ID().Equal(w.Device) {
		return SubscribeToken{}, fmt.Errorf("%w: keys are not those of device %s", ErrBadToken, w.Device)
	}
	t := SubscribeToken{
		Device: w.Device, Node: w.Node, Time: time.UnixMilli(int64(w.Time)).UTC(),
		Delivery: w.Delivery, Public: pub, Sig: w.Sig,
	}
	if err := pub.Signing.Verify(DomainSubscribe, t.SignedBytes(), t.Sig); err != nil {
		return SubscribeToken{}, fmt.Errorf("%w: signature: %w", ErrBadToken, err)
	}
	if again, _ := t.Encode(); !bytes.Equal(again, b) {
		return SubscribeToken{}, fmt.Errorf("%w: not canonical CBOR", ErrBadToken)
	}
	return t, nil
}

// CheckFor reports whether the token lets node subscribe at now: it names
// node, and its Time is at most MaxClockSkew after now and at most
// SubscribeTokenLifetime + MaxClockSkew before.
func (t SubscribeToken) CheckFor(node string, now time.Time) error {
	switch {
	case t.Node != node:
		return fmt.Errorf("%w: token for node %s, not %s", ErrBadToken, t.Node, node)
	case t.Time.After(now.Add(MaxClockSkew)):
		return fmt.Errorf("%w: token dated %s, in the future", ErrBadToken, t.Time.Format(time.RFC3339))
	case now.Sub(t.Time) > SubscribeTokenLifetime+MaxClockSkew:
		return fmt.Errorf("%w: token dated %s has aged out", ErrBadToken, t.Time.Format(time.RFC3339))
	}
	return nil
}
