package detcbor

import (
	"errors"
	"testing"
)

type rec struct {
	A uint64 `cbor:"1,keyasint"`
	B []byte `cbor:"2,keyasint,omitempty"`
}

var strict = StrictDecMode(Limits{MaxNestedLevels: 4, MaxArrayElements: 16, MaxMapPairs: 16})

func TestUnmarshalCanonical(t *testing.T) {
	good := MustMarshal(rec{A: 7, B: []byte{1}})
	var r rec
	if err := UnmarshalCanonical(strict, good, 64, &r); err != nil || r.A != 7 {
		t.Fatalf("canonical record refused: %v (%+v)", err, r)
	}
	for _, tc := range []struct {
		name string
		data []byte
		max  int
		want error
	}{
		{"too long", good, len(good) - 1, ErrMalformed},
		{"unknown field", []byte{0xa1, 0x03, 0x01}, 64, ErrMalformed},
		{"duplicate key", []byte{0xa2, 0x01, 0x01, 0x01, 0x02}, 64, ErrMalformed},
		{"indefinite map", []byte{0xbf, 0x01, 0x01, 0xff}, 64, ErrMalformed},
		{"tag", []byte{0xc1, 0xa1, 0x01, 0x01}, 64, ErrMalformed},
		{"trailing bytes", append(good[:len(good):len(good)], 0x00), 64, ErrMalformed},
		{"non-minimal integer", []byte{0xa1, 0x01, 0x18, 0x07}, 64, ErrNonCanonical},
		{"unsorted keys", []byte{0xa2, 0x02, 0x41, 0x01, 0x01, 0x07}, 64, ErrNonCanonical},
	} {
		var r rec
		if err := UnmarshalCanonical(strict, tc.data, tc.max, &r); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestAllowUnknownFields(t *testing.T) {
	lax := StrictDecMode(Limits{MaxNestedLevels: 4, MaxArrayElements: 16, MaxMapPairs: 16, AllowUnknownFields: true})
	var r rec
	if err := lax.Unmarshal([]byte{0xa2, 0x01, 0x01, 0x03, 0x01}, &r); err != nil || r.A != 1 {
		t.Fatalf("unknown field refused by the lax decoder: %v", err)
	}
}
