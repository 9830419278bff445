package client

import (
	"fmt"

	"github.com/volo-chat/volo/ident"
)

// msgKey identifies a message: its sending device, that device's
// sequence number, its sent time and its text. The number alone is not
// enough: a device that lost its store, or a forged message, may use one
// number for two different messages, and a restore must keep both.
type msgKey struct {
	device ident.DeviceID
	seq    uint64
	sent   int64 // ms, as stored
	text   string
}

func keyOf(m ChatMessage) msgKey {
	return msgKey{m.Device, m.Seq, m.Sent.UnixMilli(), m.Text}
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
		have[keyOf(m)] = struct{}{}
	}
	fresh := make([]ChatMessage, 0, len(restored))
	for _, m := range restored {
		k := keyOf(m)
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
	// No send between reading the sequence number and storing its
	// message: it must not take a number the backup holds.
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	// A backup of this very device (restored after its store was lost)
	// holds numbers it used: the next message takes one above them.
	next := ch.st.seq
	for _, h := range a.History {
		for _, m := range h {
			if m.Device.Equal(ch.self.Device) {
				next = max(next, m.Seq+1)
			}
		}
	}
	if next > ch.st.seq {
		if err := ch.commitLocked(chatRecord{Seq: next}); err != nil {
			return 0, err
		}
	}
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
		// The merged history cannot be appended (a replay inserts each
		// message after its device's earlier ones, not by time): the log
		// is rewritten from the state with it. ch.st keeps the merged
		// history exactly if the new log replaced the old one.
		old := make(map[ident.UserID][]ChatMessage, len(merged))
		for peer, h := range merged {
			old[peer] = ch.st.history[peer]
			ch.st.history[peer] = h
		}
		replaced, err := ch.store.rewrite(ch.st)
		if !replaced {
			for peer, h := range old {
				if h == nil {
					delete(ch.st.history, peer)
				} else {
					ch.st.history[peer] = h
				}
			}
			return 0, err
		}
		if err != nil {
			return added, err
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
