package backupstore

import (
	"fmt"
	"time"

	"github.com/volo-chat/volo/internal/config"
	"github.com/volo-chat/volo/p2p"
)

// Config is the [backup] section of a node's configuration.
type Config struct {
	// Enabled makes this node a storage node: it serves ProtocolID and
	// holds the chunks it is among the closest nodes for. Every node can
	// upload and download through the storage nodes either way.
	Enabled bool `toml:"enabled"`
	// Replicas (r) is the number of storage nodes, closest to a chunk's
	// CID, that hold the chunk.
	Replicas int `toml:"replicas"`
	// WriteQuorum is how many of them must have a chunk on disk before
	// the upload is acknowledged.
	WriteQuorum int `toml:"write_quorum"`
	// QuotaBytes is how many chunk bytes one user may keep on this node.
	QuotaBytes uint64 `toml:"quota_bytes"`
	// QuotaChunks is how many chunks one user may keep on this node.
	QuotaChunks uint64 `toml:"quota_chunks"`
	// RepairInterval is how often the node checks that each chunk it holds
	// is on its r closest storage nodes, and pushes it where it is missing.
	RepairInterval config.Duration `toml:"repair_interval"`
	// GCInterval is how often unreferenced chunks are collected.
	GCInterval config.Duration `toml:"gc_interval"`
	// GCGrace is how long a chunk is kept before it must be referenced by
	// its owner's newest backup pointer.
	GCGrace config.Duration `toml:"gc_grace"`
	// RepublishInterval is how often the pointers in the store are put in
	// the DHT again and the held chunks announced as provided again.
	RepublishInterval config.Duration `toml:"republish_interval"`
}

// DefaultConfig is a storage node holding each chunk on 3 nodes with a
// write quorum of 2 and a quota of 2 GiB in 131,072 chunks per user:
// room for a 1 GiB backup and the one before it until the GC takes it.
func DefaultConfig() Config {
	return Config{
		Enabled:           true,
		Replicas:          3,
		WriteQuorum:       2,
		QuotaBytes:        2 << 30,
		QuotaChunks:       1 << 17,
		RepairInterval:    config.Duration(time.Hour),
		GCInterval:        config.Duration(time.Hour),
		GCGrace:           config.Duration(24 * time.Hour),
		RepublishInterval: config.Duration(12 * time.Hour),
	}
}

// Validate checks every field and names the first bad one.
func (c Config) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > maxReplicas:
		return fmt.Errorf("backup.replicas: %d is not in [1, %d]", c.Replicas, maxReplicas)
	case c.WriteQuorum < 1 || c.WriteQuorum > c.Replicas:
		return fmt.Errorf("backup.write_quorum: %d is not in [1, replicas = %d]", c.WriteQuorum, c.Replicas)
	case c.QuotaBytes == 0:
		return fmt.Errorf("backup.quota_bytes: must be positive")
	case c.QuotaChunks == 0:
		return fmt.Errorf("backup.quota_chunks: must be positive")
	case c.RepairInterval <= 0:
		return fmt.Errorf("backup.repair_interval: must be positive, got %s", c.RepairInterval)
	case c.GCInterval <= 0:
		return fmt.Errorf("backup.gc_interval: must be positive, got %s", c.GCInterval)
	case c.GCGrace <= 0:
		return fmt.Errorf("backup.gc_grace: must be positive, got %s", c.GCGrace)
	case c.RepublishInterval <= 0 || c.RepublishInterval.Std() > p2p.RecordLifetime/2:
		return fmt.Errorf("backup.republish_interval: %s is not in (0, %s]", c.RepublishInterval, p2p.RecordLifetime/2)
	}
	return nil
}

// maxReplicas bounds backup.replicas: the DHT's bucket size.
const maxReplicas = 20
