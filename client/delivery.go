package client

import (
	"crypto/sha256"

	"github.com/volo-chat/volo/e2ee"
)

// domainDeliveryKey is the signature domain a device derives its delivery
// key with.
const domainDeliveryKey = "volo/v1/delivery-key"

// deliveryKey is the device's delivery key: SHA-256 of its (deterministic,
// Ed25519) signature over its device ID in domainDeliveryKey. Only the
// device can compute it; it gives it to its contacts inside encrypted
// messages (chatPayload.Delivery), and registers its verifier,
// wire.DeliveryVerifier of it, with its relays in its subscribe tokens.
// Envelopes carrying it count against the recipient's mailbox cap, not
// the small quota for message requests.
func deliveryKey(keys e2ee.DeviceKeys) []byte {
	sig := keys.Signing.Sign(domainDeliveryKey, keys.ID().Bytes())
	h := sha256.Sum256(sig)
	return h[:]
}
