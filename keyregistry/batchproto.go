package keyregistry

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/volo-chat/volo/keyregistry/anchorproof"
)

// BatchProtocol is the protocol a node fetches a batch with from the node
// that published it: the client writes the batch's binary CID (36 bytes)
// and closes its side; the server answers with the batch bytes and closes,
// or resets the stream when it has no such batch.
const BatchProtocol = protocol.ID("/volo/anchor/1.0.0")

// Timeouts of BatchProtocol.
const (
	// BatchFetchTimeout bounds one fetch of a batch from its publisher.
	BatchFetchTimeout = 2 * time.Minute
	// batchRequestTimeout bounds how long a server waits for a request.
	batchRequestTimeout = 10 * time.Second
	// batchSendTimeout bounds how long a server spends sending one batch.
	batchSendTimeout = 2 * time.Minute
)

// serveBatch answers one BatchProtocol request.
func (s *Service) serveBatch(st network.Stream) {
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(batchRequestTimeout))
	req, err := io.ReadAll(io.LimitReader(st, 37))
	if err != nil || len(req) != 36 {
		st.Reset()
		return
	}
	c, err := anchorproof.ParseBatchCID(req)
	if err != nil {
		st.Reset()
		return
	}
	raw, err := s.Batch(c)
	if err != nil {
		st.Reset()
		return
	}
	_ = st.SetWriteDeadline(time.Now().Add(batchSendTimeout))
	if _, err := st.Write(raw); err != nil {
		st.Reset()
	}
}

// batchFetchLimit is the most bytes a batch of size leaves can take.
func batchFetchLimit(size uint64) int64 {
	return int64(min(uint64(anchorproof.MaxBatchSize), 16+size*anchorproof.MaxLeafSize))
}

// FetchBatch asks node p for batch c of size leaves over BatchProtocol
// and returns its bytes; the caller checks them (checkBatch).
func (s *Service) FetchBatch(ctx context.Context, p peer.ID, c cid.Cid, size uint64) ([]byte, error) {
	st, err := s.net.Host.NewStream(network.WithAllowLimitedConn(ctx, "anchor batch"), p, BatchProtocol)
	if err != nil {
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if _, err := st.Write(c.Bytes()); err != nil {
		st.Reset()
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	limit := batchFetchLimit(size)
	raw, err := io.ReadAll(io.LimitReader(st, limit+1))
	if err != nil {
		return nil, fmt.Errorf("keyregistry: fetch batch %s from %s: %w", c, p, err)
	}
	if int64(len(raw)) > limit {
		st.Reset()
		return nil, fmt.Errorf("%w: %s from %s is over %d bytes", anchorproof.ErrBadBatch, c, p, limit)
	}
	return raw, nil
}
