package service

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options are what every service takes as functional options.
type Options struct {
	// Log is the service's logger (default: a logger that discards).
	Log *slog.Logger
	// Metrics is where the service registers its metrics (default nil:
	// the metrics are kept but not registered).
	Metrics prometheus.Registerer
	// Now is the service's clock (default time.Now).
	Now func() time.Time
}

// Option sets one of the Options.
type Option func(*Options)

// WithLogger sets the logger.
func WithLogger(log *slog.Logger) Option { return func(o *Options) { o.Log = log } }

// WithMetrics sets the registry of the metrics.
func WithMetrics(reg prometheus.Registerer) Option { return func(o *Options) { o.Metrics = reg } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(o *Options) { o.Now = now } }

// Apply returns the options opts set, with the defaults for the others.
func Apply(opts []Option) Options {
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
