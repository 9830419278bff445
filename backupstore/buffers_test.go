package backupstore

import (
	"testing"

	"github.com/volo-chat/volo/wire"
)

func TestBufferClasses(t *testing.T) {
	for _, tc := range []struct{ n, cap int }{
		{1, 1},
		{minPooledBuffer - 1, minPooledBuffer - 1},
		{minPooledBuffer, minPooledBuffer},
		{minPooledBuffer + 1, 2 * minPooledBuffer},
		{1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20},
		{wire.MaxChunkSize, wire.MaxChunkSize},
		{wire.MaxChunkSize + 1, wire.MaxChunkSize + 1},
	} {
		b := getBuffer(tc.n)
		if len(b) != tc.n || cap(b) != tc.cap {
			t.Errorf("getBuffer(%d): len %d cap %d, want cap %d", tc.n, len(b), cap(b), tc.cap)
		}
		putBuffer(b)
		// Whatever the pool hands out again has the asked length and
		// its class's capacity.
		if b := getBuffer(tc.n); len(b) != tc.n || cap(b) != tc.cap {
			t.Errorf("getBuffer(%d) again: len %d cap %d, want cap %d", tc.n, len(b), cap(b), tc.cap)
		}
	}
	// A buffer of a size between classes is never pooled, so a later
	// getBuffer cannot return a buffer too small for its class.
	putBuffer(make([]byte, 3*minPooledBuffer))
	for range 100 {
		if b := getBuffer(4 * minPooledBuffer); cap(b) != 4*minPooledBuffer {
			t.Fatalf("class of 4×64 KiB gave a buffer of capacity %d", cap(b))
		}
	}
}
