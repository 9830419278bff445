package anchorproof

import (
	"testing"
	"time"

	"github.com/volo-chat/volo/chain"
)

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
