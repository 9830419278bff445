package ident

import "fmt"

// RendezvousIDSize is the size of a rendezvous mailbox name.
const RendezvousIDSize = 32

// RendezvousID names a linking mailbox on a node.
type RendezvousID [RendezvousIDSize]byte

// String returns lower-case unpadded base32 (52 characters).
func (r RendezvousID) String() string { return Base32(r[:]) }

// ParseRendezvousID parses the form written by String.
func ParseRendezvousID(s string) (RendezvousID, error) {
	var r RendezvousID
	b, ok := ParseBase32(s)
	if !ok || len(b) != RendezvousIDSize {
		return r, fmt.Errorf("ident: parse rendezvous ID %q: %w", s, ErrBadID)
	}
	copy(r[:], b)
	return r, nil
}
