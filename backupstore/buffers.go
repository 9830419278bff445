package backupstore

import (
	"math/bits"
	"sync"

	"github.com/volo-chat/volo/wire"
)

// Chunk buffers. A storage node reads the chunks it receives, and the ones
// it reads from its store to send, into pooled buffers that it takes back
// once the chunk is committed or sent: a stream of 1 MiB chunks does not
// allocate and zero a new buffer for each. Buffers come in power-of-two
// size classes from minPooledBuffer to wire.MaxChunkSize; smaller parts
// are allocated as usual.
const (
	// minPooledBuffer is the smallest pooled buffer (64 KiB).
	minPooledBuffer     = 1 << minPooledBufferBits
	minPooledBufferBits = 16
	// maxPooledBufferBits makes the largest pooled buffer wire.MaxChunkSize.
	maxPooledBufferBits = 22
)

// The largest size class must hold the largest chunk.
var _ [1<<maxPooledBufferBits - wire.MaxChunkSize]struct{}

var bufferPools [maxPooledBufferBits - minPooledBufferBits + 1]sync.Pool

// bufferClass returns the pool of buffers of n bytes, or -1.
func bufferClass(n int) int {
	if n < minPooledBuffer || n > wire.MaxChunkSize {
		return -1
	}
	return bits.Len(uint(n-1)) - minPooledBufferBits
}

// getBuffer returns a buffer of length n, pooled when n is a chunk's size;
// putBuffer gives it back.
func getBuffer(n int) []byte {
	c := bufferClass(n)
	if c < 0 {
		return make([]byte, n)
	}
	if p, ok := bufferPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, minPooledBuffer<<c)
}

// putBuffer takes back a buffer from getBuffer that nothing refers to any
// more; other buffers are left to the garbage collector.
func putBuffer(b []byte) {
	c := bufferClass(cap(b))
	if c < 0 || cap(b) != minPooledBuffer<<c {
		return
	}
	b = b[:0]
	bufferPools[c].Put(&b)
}
