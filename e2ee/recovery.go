package e2ee

import (
	"fmt"
	"io"
	"strings"

	"github.com/volo-chat/volo/ident"
)

// RecoveryGroup is the number of characters between the dashes of a
// recovery key's text form.
const RecoveryGroup = 4

// RecoveryKey is a user's recovery key (Keybase's paper key is the model):
// an Ed25519 key made at registration, whose public key the genesis link
// names, shown once to the user as text and kept nowhere by Volo. Links it
// signs add or revoke devices and win a fork (ident.ResolveFork). Its
// String never prints the key.
type RecoveryKey struct{ k SigningKey }

// GenerateRecoveryKey draws a new recovery key from rand.
func GenerateRecoveryKey(rand io.Reader) (RecoveryKey, error) {
	k, err := GenerateSigningKey(rand)
	if err != nil {
		return RecoveryKey{}, fmt.Errorf("e2ee: generate recovery key: %w", err)
	}
	return RecoveryKey{k}, nil
}

// ParseRecoveryKey reads the text form written by Text. Case, spaces and
// dashes do not matter.
func ParseRecoveryKey(text string) (RecoveryKey, error) {
	s := strings.Map(func(r rune) rune {
		switch r {
		case '-', ' ', '\t', '\n', '\r':
			return -1
		}
		return r
	}, strings.ToLower(text))
	seed, ok := ident.ParseBase32(s)
	if !ok || len(seed) != ident.SigningSeedSize {
		return RecoveryKey{}, fmt.Errorf("e2ee: parse recovery key: want %d base32 characters: %w",
			len(ident.Base32(make([]byte, ident.SigningSeedSize))), ident.ErrBadKey)
	}
	k, err := SigningKeyFromSeed(seed)
	if err != nil {
		return RecoveryKey{}, fmt.Errorf("e2ee: parse recovery key: %w", err)
	}
	return RecoveryKey{k}, nil
}

// Text is the form shown to the user: the 32-byte Ed25519 seed in
// lower-case unpadded base32 (52 characters), in groups of RecoveryGroup
// characters joined by "-".
func (r RecoveryKey) Text() string {
	s := ident.Base32(r.k.Seed())
	var b strings.Builder
	for i := 0; i < len(s); i += RecoveryGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+RecoveryGroup, len(s))])
	}
	return b.String()
}

// Public returns the public key the genesis link names.
func (r RecoveryKey) Public() ident.SigningPublic { return r.k.Public() }

// IsZero reports whether r holds no key.
func (r RecoveryKey) IsZero() bool { return r.k.IsZero() }

// String never prints the key.
func (r RecoveryKey) String() string { return "RecoveryKey(redacted)" }

// GoString never prints the key.
func (r RecoveryKey) GoString() string { return r.String() }
