package keyregistry

import (
	"context"
	"errors"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/ident"
)

// Topic is the gossipsub topic on which nodes announce accepted chains.
// Each message is one Record, the same bytes as the DHT value.
const Topic = "/volo/registry/1"

// validateGossip is the topic validator: only records whose chain verifies
// and whose attestation the node accepts (within its attesting node's
// budget) are delivered or forwarded. The verified chain rides along to
// readGossip.
func (s *Service) validateGossip(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	c, err := s.val.decodeAnnouncement(msg.GetData())
	if errors.Is(err, ErrAttestBudget) {
		// A valid record over the budget: not stored nor forwarded, but
		// the peer that forwarded it did nothing wrong, so its score is
		// not lowered.
		return pubsub.ValidationIgnore
	}
	if err != nil {
		s.reject("bad_gossip")
		s.log.Debug("refused a gossiped chain", "from", msg.GetFrom().String(), "err", err)
		return pubsub.ValidationReject
	}
	msg.ValidatorData = c
	return pubsub.ValidationAccept
}

// decodeAnnouncement decodes and verifies one message of the gossip topic:
// a Record of any user, under the node's policy (Validator.decode).
func (v Validator) decodeAnnouncement(data []byte) (Chain, error) {
	return v.decode(data, ident.UserID{}, true)
}

// readGossip keeps the announced chains that are new to the node, extend
// its copy or win a fork with it (ident.ResolveFork); rollbacks are
// ignored with a log line, forks remembered (Fork); when the announced
// chain loses a fork, the node announces the winner, so the nodes that
// hold the losing branch switch to it.
func (s *Service) readGossip() {
	self := s.net.Host.ID()
	for {
		msg, err := s.sub.Next(s.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == self {
			continue
		}
		c, ok := msg.ValidatorData.(Chain)
		if !ok {
			continue
		}
		res, kept, err := s.consider(s.ctx, c)
		switch {
		case err != nil:
			s.log.Error("store a gossiped chain", "user", c.Set.User().String(), "err", err)
		case res.Relation == ident.ChainExtends:
			s.m.gossip.WithLabelValues("stored").Inc()
		case res.Relation == ident.ChainSame:
			s.m.gossip.WithLabelValues("same").Inc()
		case res.Relation == ident.ChainRollback:
			s.m.gossip.WithLabelValues("rollback").Inc()
			s.log.Info("ignored a gossiped chain older than ours", "user", c.Set.User().String(), "version", c.Version(), "from", msg.GetFrom().String())
		case res.Candidate:
			s.m.gossip.WithLabelValues("fork_won").Inc()
			s.log.Warn("a gossiped chain forks from ours and wins the fork rule: kept it", "user", c.Set.User().String(),
				"version", c.Version(), "at", res.At, "rule", res.Rule.String(), "from", msg.GetFrom().String())
		default:
			s.m.gossip.WithLabelValues("fork_lost").Inc()
			s.log.Warn("a gossiped chain forks from ours and loses the fork rule: kept ours", "user", c.Set.User().String(),
				"version", c.Version(), "at", res.At, "rule", res.Rule.String(), "from", msg.GetFrom().String())
			// The nodes that sent the losing branch learn the winner.
			if err := s.topic.Publish(s.ctx, kept.Record().Encode()); err != nil {
				s.log.Warn("gossip of a fork's winning chain failed", "user", c.Set.User().String(), "err", err)
			}
		}
	}
}
