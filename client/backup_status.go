package client

import (
	"context"

	"github.com/ipfs/go-cid"

	"github.com/volo-chat/volo/wire"
)

// BackupStatus describes the newest backup of this user.
type BackupStatus struct {
	Pointer wire.BackupPointer
	Chunks  int
	// ManifestReplicas is the number of storage nodes holding the manifest.
	ManifestReplicas int
	// Checked lists the chunks whose replicas were asked for: all of them,
	// or an even sample of MaxStatusChunks when Sampled.
	Checked []ChunkStatus
	Sampled bool
	// MinReplicas is the fewest replicas among the manifest and the
	// checked chunks.
	MinReplicas int
}

// ChunkStatus is the replicas of one chunk.
type ChunkStatus struct {
	Index    int
	CID      cid.Cid
	Size     uint32
	Replicas int
	Holders  []string
}

// BackupStatus verifies this user's backup pointer, fetches the manifest
// and asks the node how many storage nodes hold it and each chunk (a
// sample of MaxStatusChunks for larger backups). It needs no password.
func (c *Client) BackupStatus(ctx context.Context) (BackupStatus, error) {
	rec, err := c.ownPointer(ctx)
	if err != nil {
		return BackupStatus{}, err
	}
	m, err := c.fetchManifest(ctx, rec)
	if err != nil {
		return BackupStatus{}, err
	}
	s := BackupStatus{Pointer: rec.Pointer, Chunks: len(m.Chunks)}
	r, err := c.api.Replicas(ctx, rec.Pointer.Manifest)
	if err != nil {
		return BackupStatus{}, err
	}
	s.ManifestReplicas, s.MinReplicas = r.Replicas, r.Replicas
	idx := sampleIndexes(len(m.Chunks), MaxStatusChunks)
	s.Sampled = len(idx) < len(m.Chunks)
	for _, i := range idx {
		ch := m.Chunks[i]
		r, err := c.api.Replicas(ctx, ch.CID)
		if err != nil {
			return BackupStatus{}, err
		}
		s.Checked = append(s.Checked, ChunkStatus{Index: i, CID: ch.CID, Size: ch.Size, Replicas: r.Replicas, Holders: r.Holders})
		s.MinReplicas = min(s.MinReplicas, r.Replicas)
	}
	return s, nil
}

// sampleIndexes returns every index below n, or k of them spread evenly
// (the first and the last included) when n > k.
func sampleIndexes(n, k int) []int {
	if n <= k {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, k)
	for j := range out {
		out[j] = j * (n - 1) / (k - 1)
	}
	return out
}
