package backupstore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the backup store's Prometheus metrics.
type metrics struct {
	stored     prometheus.Counter
	bytes      prometheus.Counter
	refusals   *prometheus.CounterVec
	repairs    prometheus.Counter
	handedOver prometheus.Counter
	gcDeleted  prometheus.Counter
	gcBytes    prometheus.Counter
	corrupt    prometheus.Counter
	served     *prometheus.CounterVec
	// commitBatch is the number of writes each group commit took.
	commitBatch prometheus.Histogram
}

// newMetrics builds the metrics and registers them on reg (nil: not
// registered), with gauges that read the per-user usage at each scrape.
func newMetrics(reg prometheus.Registerer, cs *chunkStore) (*metrics, error) {
	m := &metrics{
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_chunks_stored_total",
			Help: "Chunks this storage node stored (chunks it already held not counted).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_stored_bytes_total",
			Help: "Bytes of the chunks this storage node stored.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_backup_refusals_total",
			Help: "Uploads and protocol requests refused, by reason (quota, auth, bad_chunk, bad_request).",
		}, []string{"reason"}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_repairs_total",
			Help: "Chunk copies this node pushed to closest storage nodes that lacked them.",
		}),
		handedOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_handed_over_chunks_total",
			Help: "Chunks this node deleted after its closest storage nodes all held them.",
		}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_gc_deleted_chunks_total",
			Help: "Chunks deleted by garbage collection.",
		}),
		gcBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_gc_deleted_bytes_total",
			Help: "Bytes freed by garbage collection.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "volo_backup_corrupt_chunks_total",
			Help: "Stored chunks found not to match their CID on read (dropped, never served).",
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_backup_chunks_served_total",
			Help: "Chunks served to clients of this node, by where they came from (local, replica, provider).",
		}, []string{"source"}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "volo_backup_commit_batch_chunks",
			Help:    "Chunk writes (stores and removals) that shared one synced commit of the store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
	}
	if reg == nil {
		return m, nil
	}
	total := func(pick func(Usage) uint64) func() float64 {
		return func() float64 {
			var sum uint64
			err := cs.db.Iterate([]byte(keyUsage), false, func(_, v []byte) error {
				var u Usage
				if err := decMode.Unmarshal(v, &u); err != nil {
					return err
				}
				sum += pick(u)
				return nil
			})
			if err != nil {
				return 0
			}
			return float64(sum)
		}
	}
	cs2 := []prometheus.Collector{m.stored, m.bytes, m.refusals, m.repairs, m.handedOver, m.gcDeleted, m.gcBytes, m.corrupt, m.served, m.commitBatch,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_backup_held_chunks",
			Help: "Chunks held on this storage node.",
		}, total(func(u Usage) uint64 { return u.Chunks })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "volo_backup_held_bytes",
			Help: "Bytes of the chunks held on this storage node.",
		}, total(func(u Usage) uint64 { return u.Bytes })),
	}
	for _, c := range cs2 {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("backupstore: metrics: %w", err)
		}
	}
	return m, nil
}
