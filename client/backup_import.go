package client

import (
	"fmt"

	"github.com/volo-chat/volo/ident"
)

// msgKey identifies a message: its sending device and that device's
// sequence number, which the device never reuses.
type msgKey struct {
	device ident.DeviceID
	seq    uint64
}

// mergeHistory adds the messages of restored that existing lacks (by
// msgKey) to existing. The two lists are interleaved by the time each
// device received them, each keeping its own order; then each sending
// device's messages are put in Seq order the way the chat store does
// (chatState.insert), so replaying the store gives the same history.
// Messages of existing are never changed. It returns the new history and
// the number of messages added.
func mergeHistory(existing, restored []ChatMessage) ([]ChatMessage, int) {
	have := make(map[msgKey]struct{}, len(existing)+len(restored))
	for _, m := range existing {
		have[msgKey{m.Device, m.Seq}] = struct{}{}
	}
	fresh := make([]ChatMessage, 0, len(restored))
	for _, m := range restored {
		k := msgKey{m.Device, m.Seq}
		if _, ok := have[k]; !ok {
			have[k] = struct{}{}
			fresh = append(fresh, m)
		}
	}
	if len(fresh) == 0 {
		return existing, 0
	}
	merged := make([]ChatMessage, 0, len(existing)+len(fresh))
	i, j := 0, 0
	for i < len(existing) && j < len(fresh) {
		if fresh[j].Received.Before(existing[i].Received) {
			merged = append(merged, fresh[j])
			j++
		} else {
			merged = append(merged, existing[i])
			i++
		}
	}
	merged = append(merged, existing[i:]...)
	merged = append(merged, fresh[j:]...)
	st := &chatState{history: map[ident.UserID][]ChatMessage{}}
	var peer ident.UserID
	if len(merged) > 0 {
		peer = merged[0].Peer
		st.history[peer] = make([]ChatMessage, 0, len(merged))
	}
	for _, m := range merged {
		st.insert(m)
	}
	return st.history[peer], len(fresh)
}

// importArchive merges a decoded archive of this user into the chat store
// and the home: messages not in history yet are added (see mergeHistory)
// and the store is rewritten so that replaying it gives the merged
// history; settings the home lacks are taken. It returns the number of
// messages added.
func (ch *Chat) importArchive(a *Archive) (int, error) {
	if !a.User.Equal(ch.self.User) {
		return 0, fmt.Errorf("client: the backup is of user %s, this device is of %s", a.User, ch.self.User)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	merged := make(map[ident.UserID][]ChatMessage, len(a.History))
	added := 0
	for peer, restored := range a.History {
		h, n := mergeHistory(ch.st.history[peer], restored)
		if n > 0 {
			merged[peer] = h
			added += n
		}
	}
	if added > 0 {
		old := make(map[ident.UserID][]ChatMessage, len(merged))
		for peer, h := range merged {
			old[peer] = ch.st.history[peer]
			ch.st.history[peer] = h
		}
		if _, err := ch.store.rewrite(ch.st); err != nil {
			for peer, h := range old {
				if h == nil {
					delete(ch.st.history, peer)
				} else {
					ch.st.history[peer] = h
				}
			}
			return 0, err
		}
	}
	if node := a.Settings[SettingNode]; node != "" {
		st, err := ch.c.home.State()
		if err != nil {
			return added, err
		}
		if st.Node == "" {
			if _, err := ParseNodeURL(node); err == nil {
				st.Node = node
				if err := ch.c.home.SaveState(st); err != nil {
					return added, err
				}
			}
		}
	}
	return added, nil
}
