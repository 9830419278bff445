package node

import (
	"errors"
	"log/slog"
)

// ErrInjected is the error of a step failed by NewFailing.
var ErrInjected = errors.New("injected failure")

// NewFailing is New with one step failing: step (a name of Steps) fails
// with ErrInjected in phase "build" (New returns the error) or "start"
// (Start returns it).
func NewFailing(cfg Config, log *slog.Logger, phase, step string) (*Node, error) {
	return newNode(cfg, log, func(p, s string) error {
		if p == phase && s == step {
			return ErrInjected
		}
		return nil
	})
}

// Steps names the build steps in order.
func Steps() []string {
	var names []string
	for _, s := range (&Node{}).steps(nil) {
		names = append(names, s.name)
	}
	return names
}
