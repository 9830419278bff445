//go:build unix

package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ChatLockFile is the lock file of the chat store in the home: one program
// at a time opens a device's chat (two would write the same log and fight
// over the node's one session per device).
const ChatLockFile = "chat.lock"

// ErrChatInUse reports a chat store another program has open.
var ErrChatInUse = errors.New("client: this device's chat is open in another program")

// homeLock is an exclusive lock on the chat store, held while a Chat is
// open and released when its process ends, however it ends.
type homeLock struct{ f *os.File }

func lockHome(dir string) (*homeLock, error) {
	path := filepath.Join(dir, ChatLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, HomeFileMode)
	if err != nil {
		return nil, fmt.Errorf("client: chat lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b[:n]))); perr == nil && pid > 0 {
				return nil, fmt.Errorf("%w (process %d)", ErrChatInUse, pid)
			}
			return nil, ErrChatInUse
		}
		return nil, fmt.Errorf("client: chat lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &homeLock{f: f}, nil
}

// release gives the lock up; a nil lock or a second release does nothing.
func (l *homeLock) release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close()
	l.f = nil
}
