package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
	"github.com/volo-chat/volo/store"
	"github.com/volo-chat/volo/wire"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func testDevice(t testing.TB) ident.DeviceID {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

func env(to ident.DeviceID, body string, ttl time.Duration) wire.Envelope {
	return wire.Envelope{To: to, ID: wire.NewEnvelopeID(), Time: t0, TTL: ttl, Ciphertext: []byte(body)}
}

// contactOf registers the delivery verifier of a new device on m, as its
// subscribe token does, and returns the device and the delivery key its
// contacts attach.
func contactOf(t testing.TB, m *Mailboxes) (ident.DeviceID, []byte) {
	t.Helper()
	k, err := e2ee.GenerateDeviceKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, wire.DeliveryVerifierSize)
	rand.Read(key)
	if err := m.Register(context.Background(), wire.NewSubscribeToken(k, "12D3KooWNode", t0, wire.DeliveryVerifier(key))); err != nil {
		t.Fatal(err)
	}
	return k.ID(), key
}

// contactEnv is env with the delivery key.
func contactEnv(to ident.DeviceID, key []byte, body string, ttl time.Duration) wire.Envelope {
	e := env(to, body, ttl)
	e.Delivery = key
	return e
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func openMailboxes(t testing.TB, dir string, capacity int, c *clock) (*Mailboxes, *store.DB) {
	t.Helper()
	db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMailboxes(db.Prefix("relay/"), capacity, c.Now)
	m.Start()
	t.Cleanup(func() { m.Close(); db.Close() })
	return m, db
}

func bodies(ss []Stored) string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%d:%s", s.Seq, s.Envelope.Ciphertext))
	}
	return fmt.Sprint(out)
}

func TestMailboxPutListAck(t *testing.T) {
	c := &clock{now: t0}
	m, _ := openMailboxes(t, t.TempDir(), 0, c)
	alice, bob := testDevice(t), testDevice(t)
	a1, a2, b1 := env(alice, "a1", time.Hour), env(alice, "a2", time.Hour), env(bob, "b1", time.Hour)
	res, err := m.Put(t.Context(), []wire.Envelope{a1, b1, a2})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Seq != 1 || res[1].Seq != 1 || res[2].Seq != 2 || res[0].Err != nil {
		t.Fatalf("results %+v", res)
	}
	got, err := m.List(alice, 0, 10)
	if err != nil || bodies(got) != "[1:a1 2:a2]" {
		t.Fatalf("alice: %s %v", bodies(got), err)
	}
	if got, _ := m.List(alice, 1, 10); bodies(got) != "[2:a2]" {
		t.Errorf("after 1: %s", bodies(got))
	}
	if got, _ := m.List(bob, 0, 10); bodies(got) != "[1:b1]" {
		t.Errorf("bob: %s", bodies(got))
	}
	// An ack from the wrong device deletes nothing.
	if n, err := m.Ack(bob, []wire.EnvelopeRef{a1.Ref()}); n != 0 || err != nil {
		t.Errorf("bob acked alice's envelope: %d %v", n, err)
	}
	if n, err := m.Ack(alice, []wire.EnvelopeRef{a1.Ref(), a1.Ref(), {ID: wire.NewEnvelopeID()}}); n != 1 || err != nil {
		t.Errorf("ack: %d %v", n, err)
	}
	if got, _ := m.List(alice, 0, 10); bodies(got) != "[2:a2]" {
		t.Errorf("after ack: %s", bodies(got))
	}
	if n, _ := m.Count(alice); n != 1 {
		t.Errorf("count %d", n)
	}
	// Sequence numbers are never reused after deletes.
	res, _ = m.Put(t.Context(), []wire.Envelope{env(alice, "a3", time.Hour)})
	if res[0].Seq != 3 {
		t.Errorf("seq after ack: %d", res[0].Seq)
	}
}

func TestMailboxDeduplicates(t *testing.T) {
	m, _ := openMailboxes(t, t.TempDir(), 0, &clock{now: t0})
	dev := testDevice(t)
	e := env(dev, "once", time.Hour)
	m.Put(t.Context(), []wire.Envelope{e})
	res, err := m.Put(t.Context(), []wire.Envelope{e, e})
	if err != nil || !res[0].Duplicate || !res[1].Duplicate || res[0].Seq != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := m.Count(dev); n != 1 {
		t.Errorf("count %d after duplicates", n)
	}
}

func TestMailboxCap(t *testing.T) {
	m, _ := openMailboxes(t, t.TempDir(), 3, &clock{now: t0})
	other := testDevice(t)
	dev, key := contactOf(t, m)
	var envs []wire.Envelope
	for i := range 5 {
		envs = append(envs, contactEnv(dev, key, fmt.Sprint(i), time.Hour))
	}
	res, err := m.Put(t.Context(), envs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if full := errors.Is(r.Err, wire.ErrMailboxFull); full != (i >= 3) {
			t.Errorf("envelope %d: %+v", i, r)
		}
	}
	if got, _ := m.List(dev, 0, 10); bodies(got) != "[1:0 2:1 3:2]" {
		t.Errorf("mailbox %s", bodies(got))
	}
	// Other mailboxes are not affected; acking makes room again.
	if res, _ := m.Put(t.Context(), []wire.Envelope{env(other, "x", time.Hour)}); res[0].Err != nil {
		t.Errorf("other device: %v", res[0].Err)
	}
	m.Ack(dev, []wire.EnvelopeRef{envs[0].Ref()})
	if res, _ := m.Put(t.Context(), []wire.Envelope{envs[3]}); res[0].Err != nil || res[0].Seq != 4 {
		t.Errorf("after ack: %+v", res[0])
	}
}

func TestMailboxExpiry(t *testing.T) {
	c := &clock{now: t0}
	m, _ := openMailboxes(t, t.TempDir(), 0, c)
	dev := testDevice(t)
	short, long := env(dev, "short", time.Minute), env(dev, "long", time.Hour)
	m.Put(t.Context(), []wire.Envelope{short, long})

	c.Set(t0.Add(2 * time.Minute))
	// Reads hide what has expired even before the sweep runs.
	if got, _ := m.List(dev, 0, 10); bodies(got) != "[2:long]" {
		t.Errorf("list after short TTL: %s", bodies(got))
	}
	if n, err := m.Expire(c.Now()); n != 1 || err != nil {
		t.Errorf("expire: %d %v", n, err)
	}
	if n, _ := m.Count(dev); n != 1 {
		t.Errorf("count %d", n)
	}
	// An acked envelope's expiry entry is gone too: nothing to expire twice.
	m.Ack(dev, []wire.EnvelopeRef{long.Ref()})
	if n, _ := m.Expire(t0.Add(2 * time.Hour)); n != 0 {
		t.Errorf("expired %d after ack", n)
	}
	// An envelope that arrives already expired is refused.
	if res, _ := m.Put(t.Context(), []wire.Envelope{env(dev, "late", time.Minute)}); !errors.Is(res[0].Err, wire.ErrExpired) {
		t.Errorf("late envelope: %+v", res[0])
	}
}

func TestMailboxExpiresManyInBatches(t *testing.T) {
	c := &clock{now: t0}
	m, _ := openMailboxes(t, t.TempDir(), 5000, c)
	dev, key := contactOf(t, m)
	var envs []wire.Envelope
	for i := range 2500 {
		envs = append(envs, contactEnv(dev, key, fmt.Sprint(i), time.Minute))
	}
	if _, err := m.Put(t.Context(), envs); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Expire(t0.Add(time.Hour)); n != 2500 || err != nil {
		t.Errorf("expired %d, %v", n, err)
	}
	if n, _ := m.Count(dev); n != 0 {
		t.Errorf("count %d", n)
	}
}

func TestMailboxConcurrentPutsAreGroupCommitted(t *testing.T) {
	m, _ := openMailboxes(t, t.TempDir(), 0, &clock{now: t0})
	dev, key := contactOf(t, m)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	seqs := make(chan uint64, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := m.Put(context.Background(), []wire.Envelope{contactEnv(dev, key, fmt.Sprintf("%d-%d", w, i), time.Hour)})
				if err != nil || res[0].Err != nil {
					t.Errorf("put: %v %+v", err, res)
					return
				}
				seqs <- res[0].Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d given twice", s)
		}
		seen[s] = true
	}
	if n, _ := m.Count(dev); n != writers*each || len(seen) != writers*each {
		t.Errorf("count %d, %d distinct seqs", n, len(seen))
	}
}

func TestMailboxSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	c := &clock{now: t0}
	db, err := store.Open(store.Options{Dir: dir, SyncWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMailboxes(db.Prefix("relay/"), 0, c.Now)
	m.Start()
	dev := testDevice(t)
	e := env(dev, "kept", time.Hour)
	if _, err := m.Put(t.Context(), []wire.Envelope{e}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	db.Close()

	m2, _ := openMailboxes(t, dir, 0, c)
	got, err := m2.List(dev, 0, 10)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Envelope.Ciphertext, []byte("kept")) || got[0].Envelope.ID != e.ID {
		t.Fatalf("after reopen: %s %v", bodies(got), err)
	}
	if res, _ := m2.Put(t.Context(), []wire.Envelope{e}); !res[0].Duplicate {
		t.Error("dedup index lost across reopen")
	}
}

func TestMailboxRefusesEnvelopesFromTheFuture(t *testing.T) {
	c := &clock{now: t0}
	m, _ := openMailboxes(t, t.TempDir(), 0, c)
	dev := testDevice(t)
	edge, late := env(dev, "edge", time.Hour), env(dev, "late", time.Hour)
	edge.Time = t0.Add(wire.MaxClockSkew)
	late.Time = t0.Add(wire.MaxClockSkew + time.Millisecond)
	res, err := m.Put(t.Context(), []wire.Envelope{edge, late})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || !errors.Is(res[1].Err, wire.ErrFromFuture) {
		t.Fatalf("results %+v", res)
	}
	if n, _ := m.Count(dev); n != 1 {
		t.Fatalf("%d envelopes stored, want 1", n)
	}
}

// A mailbox holds at most requestsCap envelopes without the device's
// delivery key, whatever else it holds, and still takes its contacts'
// envelopes up to its cap; acks and expiry give back the quota they were
// counted against.
func TestMailboxQuotas(t *testing.T) {
	c := &clock{now: t0}
	m, _ := openMailboxes(t, t.TempDir(), 3, c)
	m.requestsCap = 2
	dev, key := contactOf(t, m)
	wrong := make([]byte, wire.DeliveryVerifierSize)
	stranger := []wire.Envelope{env(dev, "s1", time.Minute), env(dev, "s2", time.Hour), contactEnv(dev, wrong, "s3", time.Hour)}
	contacts := []wire.Envelope{contactEnv(dev, key, "c1", time.Hour), contactEnv(dev, key, "c2", time.Hour), contactEnv(dev, key, "c3", time.Hour), contactEnv(dev, key, "c4", time.Hour)}
	res, err := m.Put(t.Context(), append(stranger, contacts...))
	if err != nil {
		t.Fatal(err)
	}
	want := []error{nil, nil, wire.ErrRequestsFull, nil, nil, nil, wire.ErrMailboxFull}
	for i, r := range res {
		if !errors.Is(r.Err, want[i]) || (want[i] == nil) != (r.Err == nil) {
			t.Errorf("envelope %d: %v, want %v", i, r.Err, want[i])
		}
	}
	// The acked request and the expired one free the requests quota, not
	// the contacts'.
	if n, err := m.Ack(dev, []wire.EnvelopeRef{stranger[1].Ref()}); n != 1 || err != nil {
		t.Fatalf("ack: %d %v", n, err)
	}
	c.Set(t0.Add(2 * time.Minute))
	if n, err := m.Expire(c.Now()); n != 1 || err != nil {
		t.Fatalf("expire: %d %v", n, err)
	}
	late := []wire.Envelope{env(dev, "s4", time.Hour), env(dev, "s5", time.Hour), env(dev, "s6", time.Hour), contactEnv(dev, key, "c5", time.Hour)}
	for i := range late {
		late[i].Time = c.Now()
	}
	res, err = m.Put(t.Context(), late)
	if err != nil {
		t.Fatal(err)
	}
	want = []error{nil, nil, wire.ErrRequestsFull, wire.ErrMailboxFull}
	for i, r := range res {
		if !errors.Is(r.Err, want[i]) || (want[i] == nil) != (r.Err == nil) {
			t.Errorf("late envelope %d: %v, want %v", i, r.Err, want[i])
		}
	}
}
