package backupstore

import (
	"context"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/volo-chat/volo/wire"
)

// ReplicateTo sends chunk c to storage node p in a replicate request, as
// a repair does, with auth as the device gave it to the node entry: what
// any peer holding an old authorization can send.
func (s *Service) ReplicateTo(ctx context.Context, p peer.ID, c cid.Cid, data []byte, manifest bool, auth wire.UploadAuth, entry peer.ID) error {
	kind := kindChunk
	if manifest {
		kind = kindManifest
	}
	_, err := s.storeRemote(ctx, p, msgReplicate, c, data, kind, authorization{UploadAuth: auth, Entry: entry.String()})
	return err
}
