//go:build !unix

package client

import "errors"

// ChatLockFile is the lock file of the chat store in the home (not used
// where file locks are not available).
const ChatLockFile = "chat.lock"

// ErrChatInUse reports a chat store another program has open.
var ErrChatInUse = errors.New("client: this device's chat is open in another program")

type homeLock struct{}

func lockHome(string) (*homeLock, error) { return &homeLock{}, nil }

func (*homeLock) release() {}
