package chain

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func testAnchor() Anchor {
	a := Anchor{
		Version:  AnchorVersion,
		TreeSize: 1000,
		Seq:      7,
		BatchCID: bytes.Repeat([]byte{0xc1}, 36),
		Node:     bytes.Repeat([]byte{0xd2}, 38),
	}
	for i := range a.Root {
		a.Root[i] = byte(i)
		a.Prev[i] = byte(0xff - i)
	}
	return a
}

func equalAnchor(a, b Anchor) bool {
	return a.Version == b.Version && a.Root == b.Root && a.TreeSize == b.TreeSize &&
		a.Seq == b.Seq && a.Prev == b.Prev && bytes.Equal(a.BatchCID, b.BatchCID) && bytes.Equal(a.Node, b.Node)
}

func TestAnchorMetadataRoundTrip(t *testing.T) {
	for _, n := range []int{1, 36, 63, 64, 65, 127, 128} {
		a := testAnchor()
		a.BatchCID = bytes.Repeat([]byte{0xc1}, n)
		a.Node = bytes.Repeat([]byte{0xd2}, MaxNodeIDSize+1-n)
		b, err := EncodeAnchorMetadata(a)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		got, err := DecodeAnchorMetadata(b)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !equalAnchor(a, got) {
			t.Fatalf("size %d: decoded %+v, want %+v", n, got, a)
		}
		// Every byte string in the encoding is at most 64 bytes, and a
		// long field is a list.
		var m map[string]any
		if err := cbor.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		_, isList := m["batch_cid"].([]any)
		if isList != (n > MetadataChunkSize) {
			t.Errorf("size %d: batch_cid list=%v", n, isList)
		}
		checkChunks(t, m)
	}
}

func checkChunks(t *testing.T, v any) {
	t.Helper()
	switch v := v.(type) {
	case []byte:
		if len(v) > MetadataChunkSize {
			t.Errorf("byte string of %d bytes in metadata", len(v))
		}
	case []any:
		for _, x := range v {
			checkChunks(t, x)
		}
	case map[string]any:
		for _, x := range v {
			checkChunks(t, x)
		}
	}
}

// The committed test vector: testAnchor encoded. Its bytes are in
// testdata/anchor_metadata.hex, documented in docs/anchoring.md.
func TestAnchorMetadataVector(t *testing.T) {
	raw, err := os.ReadFile("testdata/anchor_metadata.hex")
	if err != nil {
		t.Fatal(err)
	}
	want, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := EncodeAnchorMetadata(testAnchor())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", got, want)
	}
	a, err := DecodeAnchorMetadata(want)
	if err != nil {
		t.Fatal(err)
	}
	if !equalAnchor(a, testAnchor()) {
		t.Fatal("vector decodes to a different anchor")
	}
}

// encodeMap encodes m with the same deterministic rules as
// EncodeAnchorMetadata, for building refused inputs.
func encodeMap(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := anchorEncMode.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func anchorMap(a Anchor) map[string]any {
	return map[string]any{
		"v": a.Version, "root": a.Root[:], "tree_size": a.TreeSize, "seq": a.Seq,
		"prev": a.Prev[:], "batch_cid": a.BatchCID, "node": a.Node,
	}
}

func TestDecodeAnchorMetadataRefuses(t *testing.T) {
	a := testAnchor()
	// Positive control: the hand-built map is what the encoder writes,
	// so each refusal below is for its one change alone.
	good := encodeMap(t, anchorMap(a))
	if _, err := DecodeAnchorMetadata(good); err != nil {
		t.Fatalf("control: %v", err)
	}
	enc, _ := EncodeAnchorMetadata(a)
	if !bytes.Equal(good, enc) {
		t.Fatal("control: hand-built map differs from the encoder's")
	}

	type change func(m map[string]any)
	cases := map[string]change{
		"extra key":         func(m map[string]any) { m["x"] = uint64(1) },
		"version 2":         func(m map[string]any) { m["v"] = uint64(2) },
		"version 0":         func(m map[string]any) { m["v"] = uint64(0) },
		"version as text":   func(m map[string]any) { m["v"] = "1" },
		"negative seq":      func(m map[string]any) { m["seq"] = int64(-1) },
		"seq 0":             func(m map[string]any) { m["seq"] = uint64(0) },
		"tree size 0":       func(m map[string]any) { m["tree_size"] = uint64(0) },
		"tree size as text": func(m map[string]any) { m["tree_size"] = "1000" },
		"short root":        func(m map[string]any) { m["root"] = a.Root[:31] },
		"long root":         func(m map[string]any) { m["root"] = append(a.Root[:], 0) },
		"root as text":      func(m map[string]any) { m["root"] = string(a.Root[:]) },
		"short prev":        func(m map[string]any) { m["prev"] = a.Prev[:31] },
		"empty cid":         func(m map[string]any) { m["batch_cid"] = []byte{} },
		"empty node":        func(m map[string]any) { m["node"] = []byte{} },
		"cid 65 bytes flat": func(m map[string]any) { m["batch_cid"] = bytes.Repeat([]byte{1}, 65) },
		"cid too long": func(m map[string]any) {
			m["batch_cid"] = [][]byte{bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{1}, 64), {1}}
		},
		"node too long": func(m map[string]any) {
			m["node"] = [][]byte{bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{1}, 64), {1}}
		},
		"short value as list": func(m map[string]any) { m["node"] = [][]byte{a.Node} },
		"chunks not 64": func(m map[string]any) {
			m["batch_cid"] = [][]byte{bytes.Repeat([]byte{1}, 40), bytes.Repeat([]byte{1}, 40)}
		},
		"empty chunk":      func(m map[string]any) { m["batch_cid"] = [][]byte{bytes.Repeat([]byte{1}, 64), {}} },
		"list of integers": func(m map[string]any) { m["node"] = []uint64{1, 2} },
		"map value":        func(m map[string]any) { m["node"] = map[string]uint64{"a": 1} },
	}
	for _, k := range anchorKeys {
		cases["no "+k] = func(m map[string]any) { delete(m, k) }
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := anchorMap(a)
			c(m)
			b := encodeMap(t, m)
			if _, err := DecodeAnchorMetadata(b); !errors.Is(err, ErrBadAnchor) {
				t.Fatalf("got %v, want ErrBadAnchor", err)
			}
		})
	}
}

func TestDecodeAnchorMetadataNonCanonical(t *testing.T) {
	good, err := EncodeAnchorMetadata(testAnchor())
	if err != nil {
		t.Fatal(err)
	}
	raw := map[string]string{
		// Keys out of the deterministic order (length first, then bytes).
		"unsorted keys": "",
		// seq = 7 written as a one-byte-argument integer (0x18 0x07).
		"long integer": "",
		// Trailing bytes after the map.
		"trailing": hex.EncodeToString(append(bytes.Clone(good), 0x00)),
		// An indefinite-length map.
		"indefinite": "bf" + hex.EncodeToString(good[1:]) + "ff",
	}
	// Build the unsorted map by hand: put "v" last.
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	var unsorted bytes.Buffer
	unsorted.WriteByte(0xa7)
	for _, k := range []string{"seq", "node", "prev", "root", "batch_cid", "tree_size", "v"} {
		kb, _ := cbor.Marshal(k)
		unsorted.Write(kb)
		unsorted.Write(m[k])
	}
	raw["unsorted keys"] = hex.EncodeToString(unsorted.Bytes())
	seq := bytes.Index(good, []byte{0x63, 's', 'e', 'q', 0x07})
	if seq < 0 {
		t.Fatal("seq not found in encoding")
	}
	long := append(bytes.Clone(good[:seq+4]), 0x18, 0x07)
	long = append(long, good[seq+5:]...)
	raw["long integer"] = hex.EncodeToString(long)

	for name, h := range raw {
		b, _ := hex.DecodeString(h)
		if _, err := DecodeAnchorMetadata(b); !errors.Is(err, ErrBadAnchor) {
			t.Errorf("%s: got %v, want ErrBadAnchor", name, err)
		}
	}
	// The plain cbor decoder accepts the reordered and long forms: the
	// refusals above are the strict decoder's.
	for _, name := range []string{"unsorted keys", "long integer"} {
		b, _ := hex.DecodeString(raw[name])
		var any map[string]any
		if err := cbor.Unmarshal(b, &any); err != nil {
			t.Errorf("%s: control decode failed: %v", name, err)
		}
	}
}

func TestEncodeAnchorMetadataRefuses(t *testing.T) {
	for name, f := range map[string]func(*Anchor){
		"version":   func(a *Anchor) { a.Version = 2 },
		"tree size": func(a *Anchor) { a.TreeSize = 0 },
		"seq":       func(a *Anchor) { a.Seq = 0 },
		"no cid":    func(a *Anchor) { a.BatchCID = nil },
		"long cid":  func(a *Anchor) { a.BatchCID = make([]byte, MaxBatchCIDSize+1) },
		"no node":   func(a *Anchor) { a.Node = nil },
		"long node": func(a *Anchor) { a.Node = make([]byte, MaxNodeIDSize+1) },
	} {
		a := testAnchor()
		f(&a)
		if _, err := EncodeAnchorMetadata(a); !errors.Is(err, ErrBadAnchor) {
			t.Errorf("%s: got %v, want ErrBadAnchor", name, err)
		}
	}
}

func FuzzDecodeAnchorMetadata(f *testing.F) {
	good, err := EncodeAnchorMetadata(testAnchor())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	long := testAnchor()
	long.BatchCID = bytes.Repeat([]byte{3}, 100)
	if b, err := EncodeAnchorMetadata(long); err == nil {
		f.Add(b)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xbf, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnchorMetadata(b)
		if err != nil {
			if !errors.Is(err, ErrBadAnchor) {
				t.Fatalf("error %v does not wrap ErrBadAnchor", err)
			}
			return
		}
		again, err := EncodeAnchorMetadata(a)
		if err != nil {
			t.Fatalf("decoded anchor does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding %x (canonical %x)", b, again)
		}
	})
}
