package e2ee

import (
	"crypto/sha512"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/volo-chat/volo/ident"
)

// Safety number parameters.
const (
	SafetyNumberGroups      = 12                                           // groups of digits shown
	SafetyNumberGroupDigits = 5                                            // digits per group
	SafetyNumberDigits      = SafetyNumberGroups * SafetyNumberGroupDigits // 60
	// SafetyIterations is the number of SHA-512 iterations over the
	// conversation digest.
	SafetyIterations = 5200

	safetyBytes    = SafetyNumberGroups * 5 // 5 bytes (40 bits) per group of 5 digits
	safetyDomain   = "volo/v1/safety"
	safetyVersion  = 1
	safetyQRPrefix = "VOLO-SAFETY:V1:"
	maxSafetyText  = 1024
)

// Errors of safety numbers.
var (
	// ErrBadSafetyNumber reports text that is neither rendering of a safety number.
	ErrBadSafetyNumber = errors.New("e2ee: not a safety number")
	// ErrSafetyParticipants reports no participants, or a user given twice.
	ErrSafetyParticipants = errors.New("e2ee: bad safety number participants")
)

var safetyQREncoding = base32.StdEncoding.WithPadding(base32.NoPadding) // upper-case RFC 4648 base32 without padding: QR alphanumeric mode

// SafetyNumber identifies the exact set of device keys of every participant
// of a conversation. Two people whose apps show the same number see the same
// devices for everyone.
type SafetyNumber struct{ b [safetyBytes]byte }

// NewSafetyNumber computes the safety number of a conversation (1:1 or
// group) from the verified device sets of all its participants, the
// caller's own user included. The order of the arguments does not matter.
//
// Construction: participants sorted by user ID bytes, each one's active
// devices sorted by device ID;
//
//	input = "volo/v1/safety" || 0x00 || u32(participants) ||
//	        for each: user ID (36) || u32(devices) ||
//	                  for each: signing public (32) || messaging public (1216)
//	d = SHA-512(input)
//	h = SHA-512(u16(1) || d); then SafetyIterations times h = SHA-512(h || d)
//
// The number is the first 60 bytes of h: group i (of 12) is the big-endian
// 40-bit integer in bytes 5i..5i+4, modulo 100000, written as 5 digits.
func NewSafetyNumber(participants ...ident.DeviceSet) (SafetyNumber, error) {
	if len(participants) == 0 {
		return SafetyNumber{}, fmt.Errorf("e2ee: safety number: no participants: %w", ErrSafetyParticipants)
	}
	ps := slices.Clone(participants)
	for i, p := range ps {
		if p.Version() == 0 {
			return SafetyNumber{}, fmt.Errorf("e2ee: safety number: participant %d has no verified chain: %w", i, ident.ErrEmptyChain)
		}
	}
	slices.SortFunc(ps, func(a, b ident.DeviceSet) int { return a.User().Compare(b.User()) })
	h := sha512.New()
	var u32 [4]byte
	h.Write([]byte(safetyDomain + "\x00"))
	binary.BigEndian.PutUint32(u32[:], uint32(len(ps)))
	h.Write(u32[:])
	for i, p := range ps {
		if i > 0 && p.User().Equal(ps[i-1].User()) {
			return SafetyNumber{}, fmt.Errorf("e2ee: safety number: user %s given twice: %w", p.User(), ErrSafetyParticipants)
		}
		h.Write(p.User().Bytes())
		devs := p.Devices()
		binary.BigEndian.PutUint32(u32[:], uint32(len(devs)))
		h.Write(u32[:])
		for _, d := range devs {
			h.Write(d.Signing.Bytes())
			h.Write(d.Messaging.Bytes())
		}
	}
	d := h.Sum(nil)
	buf := make([]byte, 0, 2+sha512.Size+len(d))
	buf = binary.BigEndian.AppendUint16(buf, safetyVersion)
	buf = append(buf, d...)
	sum := sha512.Sum512(buf)
	buf = slices.Concat(sum[:], d)
	for range SafetyIterations {
		sum = sha512.Sum512(buf)
		copy(buf, sum[:])
	}
	var n SafetyNumber
	copy(n.b[:], sum[:])
	return n, nil
}

func (n SafetyNumber) digits() string {
	var b strings.Builder
	for g := range SafetyNumberGroups {
		var x uint64
		for _, c := range n.b[5*g : 5*g+5] {
			x = x<<8 | uint64(c)
		}
		fmt.Fprintf(&b, "%05d", x%100000)
	}
	return b.String()
}

// Digits returns the 60 digits as 12 groups of 5 separated by spaces.
func (n SafetyNumber) Digits() string {
	d := n.digits()
	groups := make([]string, SafetyNumberGroups)
	for g := range groups {
		groups[g] = d[g*SafetyNumberGroupDigits : (g+1)*SafetyNumberGroupDigits]
	}
	return strings.Join(groups, " ")
}

// String returns Digits.
func (n SafetyNumber) String() string { return n.Digits() }

// QR returns the QR payload: "VOLO-SAFETY:V1:" followed by the 60 bytes in
// upper-case unpadded base32 (96 characters), all in the QR alphanumeric set.
func (n SafetyNumber) QR() string { return safetyQRPrefix + safetyQREncoding.EncodeToString(n.b[:]) }

// Equal reports whether n and o are the same number.
func (n SafetyNumber) Equal(o SafetyNumber) bool { return n == o }

// parseSafety reads either rendering. It returns the 60 digits, and the
// bytes when the text was a QR payload.
func parseSafety(s string) (digits string, raw []byte, err error) {
	if len(s) > maxSafetyText {
		return "", nil, fmt.Errorf("e2ee: parse safety number: %d bytes: %w", len(s), ErrBadSafetyNumber)
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	if len(s) >= len(safetyQRPrefix) && strings.EqualFold(s[:len(safetyQRPrefix)], safetyQRPrefix) {
		body := strings.ToUpper(s[len(safetyQRPrefix):])
		b, err := safetyQREncoding.DecodeString(body)
		if err != nil || len(b) != safetyBytes || safetyQREncoding.EncodeToString(b) != body {
			return "", nil, fmt.Errorf("e2ee: parse safety number: bad QR payload: %w", ErrBadSafetyNumber)
		}
		var n SafetyNumber
		copy(n.b[:], b)
		return n.digits(), b, nil
	}
	if len(s) != SafetyNumberDigits {
		return "", nil, fmt.Errorf("e2ee: parse safety number: %d digits, want %d: %w", len(s), SafetyNumberDigits, ErrBadSafetyNumber)
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return "", nil, fmt.Errorf("e2ee: parse safety number: %q at position %d is not a digit: %w", s[i], i+1, ErrBadSafetyNumber)
		}
	}
	return s, nil, nil
}

// CompareSafetyNumbers tells whether two renderings (digits, with any
// whitespace, or QR payloads, in any mix) show the same safety number. Two
// QR payloads are compared on all 480 bits; otherwise on the 60 digits.
func CompareSafetyNumbers(a, b string) (bool, error) {
	da, ra, err := parseSafety(a)
	if err != nil {
		return false, err
	}
	db, rb, err := parseSafety(b)
	if err != nil {
		return false, err
	}
	if ra != nil && rb != nil {
		return string(ra) == string(rb), nil
	}
	return da == db, nil
}
