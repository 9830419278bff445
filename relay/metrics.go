package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/volo-chat/volo/ident"
)

// metrics are the relay's Prometheus metrics.
type metrics struct {
	stored    prometheus.Counter
	delivered prometheus.Counter
	expired   prometheus.Counter
	acked     prometheus.Counter
	handedIn  prometheus.Counter
	handedOut prometheus.Counter
	// rateLimited counts envelopes refused by the per-peer store limit.
	rateLimited prometheus.Counter
	latency     prometheus.Histogram
}

// newMetrics builds the metrics and registers them on reg (nil: not
// registered), with gauges that read the mailboxes' sizes at each scrape.
func newMetrics(reg prometheus.Registerer, box *Mailboxes) (*metrics, error) {
	m := &metrics{
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_envelopes_stored_total",
			Help: "Envelopes this relay stored (duplicates not counted).",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_envelopes_delivered_total",
			Help: "Envelopes delivered to subscriptions on this node, after deduplication.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_envelopes_expired_total",
			Help: "Envelopes this relay deleted because their TTL passed.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_envelopes_acked_total",
			Help: "Envelopes this relay deleted on a verified ack.",
		}),
		handedIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_handover_received_envelopes_total",
			Help: "Envelopes this relay received from relays handing mailboxes over.",
		}),
		handedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_handover_sent_envelopes_total",
			Help: "Envelopes this relay handed over to closer relays and deleted.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_relay_envelopes_rate_limited_total",
			Help: "Envelopes this relay refused because their sending peer passed relay.store_rate.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "volo_relay_delivery_latency_seconds",
			Help:    "Time from an envelope's timestamp to its delivery to a subscription on this node.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 14), // 1 ms to about 19 h
		}),
	}
	if reg == nil {
		return m, nil
	}
	sizes := func(pick func(mailboxes, envelopes int) int) func() float64 {
		return func() float64 {
			boxes, envs := 0, 0
			err := box.Devices(func(_ ident.DeviceID, n int) bool { boxes++; envs += n; return true })
			if err != nil {
				return 0
			}
			return float64(pick(boxes, envs))
		}
	}
	cs := []prometheus.Collector{m.stored, m.delivered, m.expired, m.acked, m.handedIn, m.handedOut, m.rateLimited, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_relay_mailboxes",
			Help: "Device mailboxes holding envelopes on this relay.",
		}, sizes(func(b, _ int) int { return b })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_relay_pending_envelopes",
			Help: "Envelopes waiting in all mailboxes on this relay.",
		}, sizes(func(_, e int) int { return e })),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("relay: metrics: %w", err)
		}
	}
	return m, nil
}
