package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/internal/testnet"
	"github.com/volo-chat/volo/internal/tstest"
	"github.com/volo-chat/volo/wire"
)

// connTestDevice registers a user on the node at url and returns its
// identity and device keys.
func connTestDevice(t *testing.T, url string) (Identity, e2ee.DeviceKeys) {
	t.Helper()
	pass := []byte("correct horse")
	c := newTestClient(t, url, nil)
	id, err := c.Register(t.Context(), "", nil, pass)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.home.Keys(pass)
	if err != nil {
		t.Fatal(err)
	}
	return id, keys
}

// A mailbox far larger than one frame, 100 envelopes of the largest size,
// goes out in send frames and comes back in deliver frames that each stay
// within wire.MaxFrameSize, and is acknowledged.
func TestConnLargestEnvelopesFillManyFrames(t *testing.T) {
	const count = 100
	nw := testnet.New(t, 1)
	url := nw.Nodes[0].APIURL()
	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	alice, aliceKeys := connTestDevice(t, url)
	bob, bobKeys := connTestDevice(t, url)

	envs := make([]wire.Envelope, count)
	for i := range envs {
		ct := make([]byte, wire.MaxCiphertextSize)
		rand.Read(ct)
		envs[i] = wire.Envelope{To: bob.Device, ID: wire.NewEnvelopeID(), Time: time.Now(), TTL: time.Hour, Ciphertext: ct}
	}
	sender, err := Dial(ctx, url, nil, alice.User, aliceKeys, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	res, err := sender.Send(ctx, envs)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	for i, r := range res {
		if err := resultError(r); err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
	}

	recv, err := Dial(ctx, url, nil, bob.User, bobKeys, true)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	var got []wire.Envelope
	for len(got) < count {
		select {
		case batch, ok := <-recv.Deliveries():
			if !ok {
				t.Fatalf("connection ended after %d of %d envelopes: %v", len(got), count, recv.Err())
			}
			got = append(got, batch...)
		case <-ctx.Done():
			t.Fatalf("%d of %d envelopes delivered", len(got), count)
		}
	}
	ids := make([]wire.EnvelopeRef, len(got))
	for i, e := range got {
		if i >= count || e.ID != envs[i].ID || !bytes.Equal(e.Ciphertext, envs[i].Ciphertext) {
			t.Fatalf("delivery %d is not envelope %d as sent", i, i)
		}
		ids[i] = e.Ref()
	}
	if err := recv.Ack(ctx, ids); err != nil {
		t.Fatal(err)
	}
	waitNoEnvelopes(t, nw, bob.Device)
}

// waitNoEnvelopes waits until no node holds an envelope for dev.
func waitNoEnvelopes(t *testing.T, nw *testnet.Network, dev ident.DeviceID) {
	t.Helper()
	tstest.WaitFor(t, e2eTimeout, func() error {
		for i, n := range nw.Nodes {
			c, err := n.Relay().Local().Count(dev)
			if err != nil {
				t.Fatal(err)
			}
			if c != 0 {
				return fmt.Errorf("node %d still holds %d acknowledged envelopes", i, c)
			}
		}
		return nil
	})
}
