package p2p

import (
	"maps"
	"net"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Gossipsub peer score thresholds (docs/protocol.md, "Gossip peer
// scoring"). A peer's score is the sum of its topic scores (capped at
// ScoreTopicCap when positive) and its behaviour and IP-colocation
// penalties.
const (
	// ScoreGossipThreshold: below it the node neither gossips (IHAVE/IWANT)
	// to the peer nor accepts gossip from it.
	ScoreGossipThreshold = -500
	// ScorePublishThreshold: below it the node's own messages are not
	// flood-published to the peer.
	ScorePublishThreshold = -1000
	// ScoreGraylistThreshold: below it every message and control message
	// from the peer is dropped unread (the peer is graylisted).
	ScoreGraylistThreshold = -2500
	// ScoreAcceptPXThreshold: peer exchange is accepted only from peers
	// above it; no peer reaches it, so peer exchange is off (peers are
	// found through the DHT).
	ScoreAcceptPXThreshold = 1000
	// ScoreOpportunisticGraftThreshold: when the median score of the mesh
	// falls below it, the node grafts better-scoring peers.
	ScoreOpportunisticGraftThreshold = 3.5
	// ScoreTopicCap caps the positive part of the topic scores.
	ScoreTopicCap = 100
	// ScoreInspectInterval is how often the node takes a snapshot of its
	// peers' scores (Host.PeerScores).
	ScoreInspectInterval = time.Second
)

// Topic score parameters, the same for every Volo topic: delivering a
// message first earns up to ScoreFirstDeliveryCap points, forgotten over
// an hour; each invalid message (refused by the topic validator) costs the
// square of their count times ScoreInvalidMessageWeight, forgotten over an
// hour. Five invalid messages graylist a peer that earned nothing; time in
// the mesh earns a little (at most ScoreTimeInMeshCap × weight = 10).
const (
	ScoreFirstDeliveryWeight   = 1
	ScoreFirstDeliveryCap      = 50
	ScoreInvalidMessageWeight  = -100
	ScoreTimeInMeshWeight      = 10.0 / 3600
	ScoreTimeInMeshCap         = 3600
	ScoreCounterDecay          = time.Hour // first deliveries and invalid messages
	ScoreBehaviourPenaltyDecay = 10 * time.Minute
	// ScoreColocationThreshold is how many peers may share one IP address
	// (loopback excepted) before each costs the square of the excess
	// times ScoreColocationWeight.
	ScoreColocationThreshold = 10
	ScoreColocationWeight    = -50
	// ScoreRetain is how long a disconnected peer's score is remembered,
	// so that reconnecting does not clear a penalty.
	ScoreRetain = time.Hour
)

// PeerScoreThresholds are the thresholds of the node's gossipsub router.
func PeerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             ScoreGossipThreshold,
		PublishThreshold:            ScorePublishThreshold,
		GraylistThreshold:           ScoreGraylistThreshold,
		AcceptPXThreshold:           ScoreAcceptPXThreshold,
		OpportunisticGraftThreshold: ScoreOpportunisticGraftThreshold,
	}
}

// PeerScoreParams are the node-wide score parameters. Topics get
// TopicScoreParams when the node joins them (Host.Topic).
func PeerScoreParams() *pubsub.PeerScoreParams {
	_, v4, _ := net.ParseCIDR("127.0.0.0/8")
	_, v6, _ := net.ParseCIDR("::1/128")
	return &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:               ScoreTopicCap,
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    ScoreColocationWeight,
		IPColocationFactorThreshold: ScoreColocationThreshold,
		IPColocationFactorWhitelist: []*net.IPNet{v4, v6},
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(ScoreBehaviourPenaltyDecay),
		DecayInterval:               pubsub.DefaultDecayInterval,
		DecayToZero:                 pubsub.DefaultDecayToZero,
		RetainScore:                 ScoreRetain,
	}
}

// TopicScoreParams are the score parameters of every Volo topic. Mesh
// delivery deficits are not penalised: Volo's topics are quiet, and a
// quiet honest peer must not lose score.
func TopicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               ScoreTimeInMeshWeight,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  ScoreTimeInMeshCap,
		FirstMessageDeliveriesWeight:   ScoreFirstDeliveryWeight,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(ScoreCounterDecay),
		FirstMessageDeliveriesCap:      ScoreFirstDeliveryCap,
		InvalidMessageDeliveriesWeight: ScoreInvalidMessageWeight,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(ScoreCounterDecay),
	}
}

// scores holds the latest snapshot of the peers' gossipsub scores, taken
// by the router's inspector.
type scores struct {
	mu   sync.Mutex
	last map[peer.ID]float64
}

func (s *scores) inspect(m map[peer.ID]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = maps.Clone(m)
}

// PeerScores returns the gossipsub score of every connected peer, as of
// the last snapshot (taken every ScoreInspectInterval).
func (h *Host) PeerScores() map[peer.ID]float64 {
	h.scores.mu.Lock()
	defer h.scores.mu.Unlock()
	return maps.Clone(h.scores.last)
}
