package ident

import (
	"bytes"
	"fmt"
)

// AnchoredAt says when a link of the user was anchored: the Cardano block
// number of an anchor proof of the link that the caller holds and has
// verified; ok is false when it holds none. A nil AnchoredAt knows of no
// anchor.
type AnchoredAt func(link LinkID) (block uint64, ok bool)

// ForkRule names the step of the fork rule that decided between two chains.
type ForkRule int

// Steps of the fork rule, see ResolveFork.
const (
	RuleNone     ForkRule = iota // no fork: same chain, extension, rollback or another user
	RuleRecovery                 // only one branch has a link signed by the recovery key
	RuleAnchor                   // one branch's divergent link was anchored first
	RuleLinkID                   // the divergent link with the smaller link ID
)

func (r ForkRule) String() string {
	switch r {
	case RuleNone:
		return "none"
	case RuleRecovery:
		return "recovery-key"
	case RuleAnchor:
		return "anchored-first"
	case RuleLinkID:
		return "smaller-link-id"
	}
	return fmt.Sprintf("ForkRule(%d)", int(r))
}

// Resolution is the outcome of ResolveFork.
type Resolution struct {
	Relation ChainRelation // how the candidate relates to the known chain
	// Candidate is true when the candidate chain is to be kept instead of
	// the known one: it extends it, or it wins the fork.
	Candidate bool
	// At is the sequence number of the first link where the chains differ
	// (ChainForked only).
	At   uint64
	Rule ForkRule // the step that decided a fork; RuleNone otherwise
}

// ResolveFork decides which of two verified chains of one user to keep.
// It is the one fork rule of every node and client.
//
// When one chain is a prefix of the other, the longer one is kept (a
// candidate that extends known wins; a rollback loses). When they fork,
// they are compared at the fork point, the first sequence number at which
// their link IDs differ, and never by length:
//
//  1. a branch that has a link signed by the user's recovery key at or
//     after the fork point wins over one that has none;
//  2. else the branch whose divergent link (the link at the fork point)
//     was anchored in the earlier block wins; if only one of the two is
//     anchored, it wins;
//  3. else the divergent link with the bytewise smaller binary link ID
//     wins.
//
// Links after the divergent one weigh only through step 1, which a thief
// without the recovery key cannot meet, so padding a branch never helps.
// known is kept for a different user or the same chain.
func ResolveFork(known, candidate DeviceSet, anchored AnchoredAt) Resolution {
	rel := Relate(known, candidate)
	switch rel {
	case ChainExtends:
		return Resolution{Relation: rel, Candidate: true}
	case ChainForked:
	default:
		return Resolution{Relation: rel}
	}
	i := 0
	for known.links[i].Equal(candidate.links[i]) {
		i++
	}
	res := Resolution{Relation: rel, At: uint64(i + 1)}
	kr, cr := known.recoverySince(i), candidate.recoverySince(i)
	if kr != cr {
		res.Candidate, res.Rule = cr, RuleRecovery
		return res
	}
	kl, cl := known.links[i], candidate.links[i]
	if anchored != nil {
		kb, kok := anchored(kl)
		cb, cok := anchored(cl)
		switch {
		case kok && cok && kb != cb:
			res.Candidate, res.Rule = cb < kb, RuleAnchor
			return res
		case kok != cok:
			res.Candidate, res.Rule = cok, RuleAnchor
			return res
		}
	}
	res.Candidate, res.Rule = bytes.Compare(cl.Bytes(), kl.Bytes()) < 0, RuleLinkID
	return res
}

// recoverySince reports whether a link at index i or later (seq i+1 or
// later) was signed by the recovery key.
func (s DeviceSet) recoverySince(i int) bool {
	for _, r := range s.byRecovery[i:] {
		if r {
			return true
		}
	}
	return false
}
