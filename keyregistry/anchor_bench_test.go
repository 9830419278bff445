package keyregistry

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/volo-chat/volo/chain"
	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// BenchmarkAnchorBatch: what one anchor costs the node for a batch of n
// links: the tree over the leaves and every link's proof. Reports the
// size of one encoded proof (what GET /v1/users adds per link).
func BenchmarkAnchorBatch(b *testing.B) {
	user := testChain(b, testKeys(b)).Set.User()
	for _, n := range []int{1, 1000, 100_000} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			batch := anchorproof.Batch{Leaves: make([]anchorproof.Leaf, n)}
			for i := range batch.Leaves {
				link := make([]byte, 1500) // about the size of an add-device link
				rand.Read(link)
				batch.Leaves[i] = anchorproof.Leaf{User: user.Bytes(), Link: link}
			}
			ann := Announcement{V: AnnouncementVersion, Sig: make([]byte, 64), TxID: make([]byte, 32),
				Block: anchorproof.BlockRef{Slot: 1, Hash: make([]byte, 32)}, Prev: anchorproof.BlockRef{Hash: make([]byte, 32)}, BlockNo: 1,
				anchor: chain.Anchor{BatchCID: anchorproof.BatchCID(batch.Encode()).Bytes()}}
			var proofBytes int
			for b.Loop() {
				t := anchorproof.TreeOf(batch)
				ann.anchor.Root, ann.anchor.TreeSize = t.Root(), t.Size()
				proofBytes = 0
				for i := range uint64(n) {
					p, err := ann.proofFor(t, i)
					if err != nil {
						b.Fatal(err)
					}
					proofBytes += len(p.Encode())
				}
			}
			b.ReportMetric(float64(n), "links/anchor")
			b.ReportMetric(float64(proofBytes)/float64(n), "proof-bytes")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/link")
		})
	}
}
