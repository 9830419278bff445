package keyregistry

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// NonceSize is the size of a registration nonce.
const NonceSize = 32

var (
	// ErrBadNonce reports a nonce this node did not issue, or that expired
	// or was used already.
	ErrBadNonce = errors.New("keyregistry: unknown, expired or used nonce")
	// ErrTooManyNonces reports a client (or all clients together) holding
	// as many unexpired nonces as allowed.
	ErrTooManyNonces = errors.New("keyregistry: too many unexpired nonces")
)

// nonceStore issues single-use nonces that expire after ttl, at most
// perClient unexpired ones per client address and total in all.
type nonceStore struct {
	ttl       time.Duration
	perClient int
	total     int

	mu      sync.Mutex
	live    map[[NonceSize]byte]nonceEntry
	clients map[string]int
	// order lists nonces in issue order, which with one TTL is also expiry
	// order: expired ones are dropped from its front.
	order []issued
}

type nonceEntry struct {
	client  string
	expires time.Time
}

type issued struct {
	nonce   [NonceSize]byte
	expires time.Time
}

func newNonceStore(ttl time.Duration, perClient, total int) *nonceStore {
	return &nonceStore{
		ttl: ttl, perClient: perClient, total: total,
		live:    make(map[[NonceSize]byte]nonceEntry),
		clients: make(map[string]int),
	}
}

// Issue returns a new nonce for client and its expiry time.
func (s *nonceStore) Issue(client string) ([]byte, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.expire(now)
	if s.clients[client] >= s.perClient {
		return nil, time.Time{}, fmt.Errorf("%w: client %s holds %d", ErrTooManyNonces, client, s.perClient)
	}
	if len(s.live) >= s.total {
		return nil, time.Time{}, fmt.Errorf("%w: the node holds %d", ErrTooManyNonces, s.total)
	}
	var n [NonceSize]byte
	rand.Read(n[:])
	exp := now.Add(s.ttl)
	s.live[n] = nonceEntry{client: client, expires: exp}
	s.clients[client]++
	if len(s.order) >= 2*s.total {
		// Used nonces stay in order until they would have expired;
		// compact it so that it stays bounded by the live ones.
		s.order = slices.DeleteFunc(s.order, func(i issued) bool { _, ok := s.live[i.nonce]; return !ok })
	}
	s.order = append(s.order, issued{n, exp})
	return n[:], exp, nil
}

// Consume uses up nonce: it succeeds once per issued, unexpired nonce.
func (s *nonceStore) Consume(nonce []byte) error {
	if len(nonce) != NonceSize {
		return fmt.Errorf("%w: %d bytes", ErrBadNonce, len(nonce))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.expire(now)
	n := [NonceSize]byte(nonce)
	e, ok := s.live[n]
	if !ok || !now.Before(e.expires) {
		return ErrBadNonce
	}
	s.drop(n, e)
	return nil
}

// Len is the number of unexpired, unused nonces.
func (s *nonceStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	return len(s.live)
}

func (s *nonceStore) expire(now time.Time) {
	i := 0
	for ; i < len(s.order) && !now.Before(s.order[i].expires); i++ {
		if e, ok := s.live[s.order[i].nonce]; ok {
			s.drop(s.order[i].nonce, e)
		}
	}
	s.order = s.order[i:]
	if len(s.order) == 0 {
		s.order = nil // release the backing array once drained
	}
}

func (s *nonceStore) drop(n [NonceSize]byte, e nonceEntry) {
	delete(s.live, n)
	if s.clients[e.client]--; s.clients[e.client] <= 0 {
		delete(s.clients, e.client)
	}
}
