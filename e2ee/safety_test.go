package e2ee

import (
	"encoding/hex"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/volo-chat/volo/ident"
)

func singleDeviceSet(t testing.TB, label string) ident.DeviceSet {
	t.Helper()
	g, err := NewGenesis(fixedDeviceKeys(t, label), testTime(0))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ident.VerifyChain(g.UserID(), []ident.Link{g})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSafetyNumber(t *testing.T) {
	alice := newChainFixture(t).last()
	bob := singleDeviceSet(t, "bob")
	carol := singleDeviceSet(t, "carol")

	ab, err := NewSafetyNumber(alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := NewSafetyNumber(bob, alice)
	if !ab.Equal(ba) {
		t.Fatal("order of participants changes the number")
	}
	if !regexp.MustCompile(`^(\d{5} ){11}\d{5}$`).MatchString(ab.Digits()) {
		t.Fatalf("digits %q", ab.Digits())
	}
	if !strings.HasPrefix(ab.QR(), "VOLO-SAFETY:V1:") || len(ab.QR()) != 15+96 {
		t.Fatalf("qr %q", ab.QR())
	}
	group1, _ := NewSafetyNumber(alice, bob, carol)
	group2, _ := NewSafetyNumber(carol, alice, bob)
	if !group1.Equal(group2) || group1.Equal(ab) {
		t.Fatal("group number")
	}
	// A device added to one participant changes the number.
	f := newChainFixture(t)
	f.add(t, f.b, fixedDeviceKeys(t, "alice watch"), testTime(500))
	ab2, _ := NewSafetyNumber(f.last(), bob)
	if ab2.Equal(ab) {
		t.Fatal("new device, same number")
	}
	if _, err := NewSafetyNumber(); !errors.Is(err, ErrSafetyParticipants) {
		t.Fatalf("no participants: %v", err)
	}
	if _, err := NewSafetyNumber(alice, bob, alice); !errors.Is(err, ErrSafetyParticipants) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := NewSafetyNumber(alice, ident.DeviceSet{}); !errors.Is(err, ident.ErrEmptyChain) {
		t.Fatalf("empty set: %v", err)
	}
}

func TestCompareSafetyNumbers(t *testing.T) {
	alice := newChainFixture(t).last()
	bob := singleDeviceSet(t, "bob")
	n, _ := NewSafetyNumber(alice, bob)
	m, _ := NewSafetyNumber(alice, singleDeviceSet(t, "mallory"))
	d := n.Digits()
	same := []string{
		d,
		strings.ReplaceAll(d, " ", ""),
		"  " + strings.ReplaceAll(d, " ", "\n") + " ",
		n.QR(),
		strings.ToLower(n.QR()),
	}
	for _, a := range same {
		for _, b := range same {
			ok, err := CompareSafetyNumbers(a, b)
			if err != nil || !ok {
				t.Fatalf("%q vs %q: %v %v", a, b, ok, err)
			}
		}
		for _, b := range []string{m.Digits(), m.QR()} {
			ok, err := CompareSafetyNumbers(a, b)
			if err != nil || ok {
				t.Fatalf("%q vs %q: match reported", a, b)
			}
		}
	}
	// One digit off.
	typo := []byte(d)
	typo[7] = '0' + (typo[7]-'0'+1)%10
	if ok, err := CompareSafetyNumbers(d, string(typo)); err != nil || ok {
		t.Fatalf("one digit off: %v %v", ok, err)
	}
	for _, bad := range []string{"", "12345", d + "1", strings.Replace(d, "1", "x", 1), "VOLO-SAFETY:V1:ABC", "VOLO-SAFETY:V1:" + strings.Repeat("A", 97), strings.Repeat(" ", 2000)} {
		if _, err := CompareSafetyNumbers(bad, d); !errors.Is(err, ErrBadSafetyNumber) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

type safetyVector struct {
	ChainVectorUser string `json:"alice_user_id"`
	BobUser         string `json:"bob_user_id"`
	BobGenesis      string `json:"bob_genesis_cbor"`
	Digits          string `json:"digits"`
	QR              string `json:"qr"`
}

func TestSafetyVectors(t *testing.T) {
	alice := newChainFixture(t).last()
	bob := singleDeviceSet(t, "bob")
	g, _ := NewGenesis(fixedDeviceKeys(t, "bob"), testTime(0))
	n, _ := NewSafetyNumber(alice, bob)
	checkVectorFile(t, "safety_vectors.json", safetyVector{
		ChainVectorUser: alice.User().String(),
		BobUser:         bob.User().String(),
		BobGenesis:      hex.EncodeToString(g.Encode()),
		Digits:          n.Digits(),
		QR:              n.QR(),
	})

	// Rebuild both device sets from committed bytes only.
	var v safetyVector
	readVectorFile(t, "safety_vectors.json", &v)
	var cv chainVector
	readVectorFile(t, "chain_vectors.json", &cv)
	var enc [][]byte
	for _, l := range cv.Links {
		enc = append(enc, mustHex(t, l.Encoded))
	}
	au, _ := ident.ParseUserID(v.ChainVectorUser)
	aset, _, err := ident.DecodeChain(au, enc)
	if err != nil {
		t.Fatal(err)
	}
	bu, _ := ident.ParseUserID(v.BobUser)
	bset, _, err := ident.DecodeChain(bu, [][]byte{mustHex(t, v.BobGenesis)})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := NewSafetyNumber(bset, aset)
	if got.Digits() != v.Digits || got.QR() != v.QR {
		t.Fatalf("safety number %s, want %s", got.Digits(), v.Digits)
	}
	if ok, _ := CompareSafetyNumbers(v.Digits, v.QR); !ok {
		t.Fatal("vector renderings disagree")
	}
}

func BenchmarkSafetyNumber(b *testing.B) {
	for _, n := range []int{2, 100} {
		sets := make([]ident.DeviceSet, n)
		for i := range sets {
			sets[i] = singleDeviceSet(b, "bench member "+strconv.Itoa(i))
		}
		b.Run(strconv.Itoa(n)+"-participants", func(b *testing.B) {
			for b.Loop() {
				if _, err := NewSafetyNumber(sets...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/op")
		})
	}
}
