package keyregistry

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/chain"
)

// BenchmarkAnchorBatch: what one anchor costs the node for a batch of n
// links: the tree over the leaves and every link's proof. Reports the
// size of one encoded proof (what GET /v1/users adds per link).
func BenchmarkAnchorBatch(b *testing.B) {
	user := testChain(b, testKeys(b)).Set.User()
	for _, n := range []int{1, 1000, 100_000} {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			batch := Batch{Leaves: make([]Leaf, n)}
			for i := range batch.Leaves {
				link := make([]byte, 1500) // about the size of an add-device link
				rand.Read(link)
				batch.Leaves[i] = Leaf{User: user.Bytes(), Link: link}
			}
			ann := Announcement{V: AnnouncementVersion, Sig: make([]byte, 64), TxID: make([]byte, 32),
				Block: BlockRef{Slot: 1, Hash: make([]byte, 32)}, Prev: BlockRef{Hash: make([]byte, 32)}, BlockNo: 1,
				anchor: chain.Anchor{BatchCID: BatchCID(batch.Encode()).Bytes()}}
			var proofBytes int
			for b.Loop() {
				t := TreeOf(batch)
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

// BenchmarkVerifyUser: the verifier's time for one user of two devices
// (two anchored links) against the devnet, over node-to-client and
// node-to-node.
func BenchmarkVerifyUser(b *testing.B) {
	ab := newAnchoredBatch(b, 2)
	c := ab.chains[0]
	proofs := ab.chainProofs(c)
	for name, r := range map[string]chain.Reader{"node-to-client": ab.n2c, "node-to-node": ab.n2n} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				v, err := VerifyAnchors(b.Context(), c.Set.User(), c.Links, proofs, r, 1)
				if err != nil || !v.OK {
					b.Fatalf("%+v %v", v, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(time.Millisecond), "ms/user")
		})
	}
}
