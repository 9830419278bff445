package p2p

import (
	"fmt"
	"sort"
	"sync"

	record "github.com/libp2p/go-libp2p-record"
)

// Validators is the registry of DHT record validators, one per record
// namespace. Every record the DHT stores, serves or accepts from a peer goes
// through it; a key in a namespace without a validator is refused.
// Services add their validators before the node starts.
type Validators struct {
	mu sync.RWMutex
	ns map[string]record.Validator
}

var _ record.Validator = (*Validators)(nil)

// NewValidators returns an empty registry.
func NewValidators() *Validators {
	return &Validators{ns: make(map[string]record.Validator)}
}

// Add registers v for keys of the form /<namespace>/…. Registering a
// namespace twice is an error.
func (vs *Validators) Add(namespace string, v record.Validator) error {
	if namespace == "" || v == nil {
		return fmt.Errorf("p2p: validator: empty namespace or nil validator")
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if _, ok := vs.ns[namespace]; ok {
		return fmt.Errorf("p2p: validator for namespace %q already registered", namespace)
	}
	vs.ns[namespace] = v
	return nil
}

// Namespaces lists the registered namespaces in order.
func (vs *Validators) Namespaces() []string {
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	out := make([]string, 0, len(vs.ns))
	for n := range vs.ns {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (vs *Validators) lookup(key string) (record.Validator, error) {
	ns, _, err := record.SplitKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: record key: %w", err)
	}
	vs.mu.RLock()
	v, ok := vs.ns[ns]
	vs.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("p2p: no validator for namespace %q: %w", ns, record.ErrInvalidRecordType)
	}
	return v, nil
}

// Validate implements record.Validator.
func (vs *Validators) Validate(key string, value []byte) error {
	v, err := vs.lookup(key)
	if err != nil {
		return err
	}
	return v.Validate(key, value)
}

// Select implements record.Validator.
func (vs *Validators) Select(key string, values [][]byte) (int, error) {
	v, err := vs.lookup(key)
	if err != nil {
		return 0, err
	}
	return v.Select(key, values)
}
