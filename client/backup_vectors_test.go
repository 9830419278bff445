package client

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volo-chat/volo/e2ee"
	"github.com/volo-chat/volo/ident"
)

// archiveVectorFile holds a backup archive test vector: the archive of a
// fixed history of fixed keys, in hex. Set VOLO_WRITE_VECTORS=1 to write
// it again after a deliberate format change.
const archiveVectorFile = "testdata/backup_archive_vector.json"

type archiveVector struct {
	Comment string `json:"comment"`
	Archive string `json:"archive_hex"`
}

// vectorArchive builds the archive of the vector: a user with a note to
// herself and a conversation of three messages with a peer, one setting.
func vectorArchive(t *testing.T) (archive []byte, user, peer ident.UserID) {
	t.Helper()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mk := func(seed string) (ident.UserID, ident.DeviceID) {
		k, err := e2ee.GenerateDeviceKeys(strings.NewReader(strings.Repeat(seed, 64)))
		if err != nil {
			t.Fatal(err)
		}
		g, err := e2ee.NewGenesis(k, at)
		if err != nil {
			t.Fatal(err)
		}
		return g.UserID(), k.ID()
	}
	user, dev := mk("u")
	peer, peerDev := mk("p")
	h := map[ident.UserID][]ChatMessage{
		user: {{Peer: user, From: user, Device: dev, Seq: 0, Sent: at, Received: at, Text: "note to self", Outgoing: true}},
		peer: {
			{Peer: peer, From: user, Device: dev, Seq: 1, Sent: at, Received: at, Text: "hello", Outgoing: true},
			{Peer: peer, From: peer, Device: peerDev, Seq: 0, Sent: at.Add(time.Second), Received: at.Add(2 * time.Second), Text: "hi ✓"},
			{Peer: peer, From: user, Device: dev, Seq: 2, Sent: at.Add(3 * time.Second), Received: at.Add(3 * time.Second), Text: "", Outgoing: true},
		},
	}
	var buf bytes.Buffer
	aw, err := newArchiveWriter(&buf, user, dev, at)
	if err != nil {
		t.Fatal(err)
	}
	if err := aw.setting(SettingNode, "http://127.0.0.1:8080"); err != nil {
		t.Fatal(err)
	}
	peers := []ident.UserID{user, peer}
	if peers[0].Compare(peers[1]) > 0 {
		peers[0], peers[1] = peers[1], peers[0]
	}
	for _, p := range peers {
		if err := aw.contact(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		for _, m := range h[p] {
			if err := aw.message(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := aw.close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), user, peer
}

// The committed archive decodes to the vector's history and is exactly
// what the writer makes of it.
func TestBackupArchiveVector(t *testing.T) {
	enc, user, peer := vectorArchive(t)
	if os.Getenv("VOLO_WRITE_VECTORS") == "1" {
		b, _ := json.MarshalIndent(archiveVector{
			Comment: "client backup archive, version 1 (docs/cli.md, Backup archive format): keys from GenerateDeviceKeys of 64 bytes 'u' (the user) and 'p' (the peer), genesis at 2026-01-02T03:04:05Z",
			Archive: hex.EncodeToString(enc),
		}, "", "  ")
		if err := os.WriteFile(filepath.FromSlash(archiveVectorFile), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.FromSlash(archiveVectorFile))
	if err != nil {
		t.Fatal(err)
	}
	var v archiveVector
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	want, err := hex.DecodeString(v.Archive)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, want) {
		t.Fatalf("the writer's archive differs from the vector:\n got %x\nwant %x", enc, want)
	}
	a, err := DecodeArchive(want)
	if err != nil {
		t.Fatal(err)
	}
	if !a.User.Equal(user) || a.Messages != 4 || len(a.Contacts) != 2 || a.Settings[SettingNode] != "http://127.0.0.1:8080" {
		t.Fatalf("decoded %+v", a)
	}
	if h := a.History[peer]; len(h) != 3 || h[1].Text != "hi ✓" || !h[1].From.Equal(peer) || h[1].Outgoing || !h[2].Outgoing || h[2].Text != "" {
		t.Fatalf("conversation: %+v", h)
	}
	if h := a.History[user]; len(h) != 1 || !h[0].From.Equal(user) || !h[0].Outgoing {
		t.Fatalf("notes: %+v", h)
	}
}
