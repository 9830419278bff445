package e2ee

import (
	"bytes"

	"github.com/volo-chat/volo/ident"
)

// SignRegistration signs the node's nonce with the device's signing key.
// A nonce outside [MinRegistrationNonceSize, MaxRegistrationNonceSize]
// gives a proof that VerifyRegistration refuses.
func SignRegistration(keys DeviceKeys, nonce []byte) ident.RegistrationProof {
	pub := keys.Public()
	p := ident.RegistrationProof{Nonce: bytes.Clone(nonce), Device: pub, ID: pub.ID()}
	p.Sig = keys.Signing.Sign(ident.DomainRegProof, p.SignedBytes())
	return p
}
