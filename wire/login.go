package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Derivations of an OpenID Connect login (docs/api.md, OIDC login): the
// client keeps a random login secret, puts only the login ID derived from it
// in the address the browser opens, and proves the secret when it collects
// the ticket. Both the callback page and the client show the confirmation
// code of the login ID.
const (
	// DomainLoginID separates the hash of a login secret.
	DomainLoginID = "volo/v1/login-id"
	// DomainLoginCode separates the hash of a login's confirmation code.
	DomainLoginCode = "volo/v1/login-code"
)

// LoginID is the login ID of login secret secret (its text form):
// base64url, no padding, of SHA-256(DomainLoginID || 0x00 || secret).
func LoginID(secret string) string {
	h := sha256.Sum256([]byte(DomainLoginID + "\x00" + secret))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// LoginCode is the confirmation code of login ID id: the first four bytes
// of SHA-256(DomainLoginCode || 0x00 || id) as a big-endian integer, modulo
// 1 000 000, written as six digits in two groups of three ("042-917").
func LoginCode(id string) string {
	h := sha256.Sum256([]byte(DomainLoginCode + "\x00" + id))
	n := binary.BigEndian.Uint32(h[:4]) % 1_000_000
	return fmt.Sprintf("%03d-%03d", n/1000, n%1000)
}
