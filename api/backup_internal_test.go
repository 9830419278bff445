package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/volo-chat/volo/backupstore"
)

// TestBackupErrorLogLevel shows that a request the client abandoned is
// logged at debug level, not as a node error, while a real failure still
// is an error.
func TestBackupErrorLogLevel(t *testing.T) {
	var logs strings.Builder
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	call := func(cancelled bool, err error) (int, string) {
		logs.Reset()
		ctx, cancel := context.WithCancel(context.Background())
		if cancelled {
			cancel()
		} else {
			defer cancel()
		}
		r := httptest.NewRequestWithContext(ctx, http.MethodPut, "/v1/backup/chunks/x", nil)
		w := httptest.NewRecorder()
		s.writeBackupError(w, r, err)
		return w.Code, logs.String()
	}

	wrapped := fmt.Errorf("backupstore: holders of x: %w", context.Canceled)
	for _, err := range []error{context.Canceled, wrapped, context.DeadlineExceeded} {
		code, out := call(true, err)
		if code != StatusClientClosedRequest || strings.Contains(out, "level=ERROR") || !strings.Contains(out, "level=DEBUG") {
			t.Fatalf("%v on a cancelled request: status %d, logs %q", err, code, out)
		}
	}
	// Positive controls: a failure of the node is an error, also when the
	// client is gone; a live request's cancelled context is not hidden.
	disk := errors.New("backupstore: read chunk: disk on fire")
	if code, out := call(false, disk); code != http.StatusInternalServerError || !strings.Contains(out, "level=ERROR") {
		t.Fatalf("internal error: status %d, logs %q", code, out)
	}
	if code, out := call(true, disk); code != http.StatusInternalServerError || !strings.Contains(out, "level=ERROR") {
		t.Fatalf("internal error of an abandoned request: status %d, logs %q", code, out)
	}
	if code, out := call(false, context.Canceled); code != http.StatusInternalServerError || !strings.Contains(out, "level=ERROR") {
		t.Fatalf("cancelled inside the node with the client waiting: status %d, logs %q", code, out)
	}
	if code, _ := call(true, backupstore.ErrNotFound); code != http.StatusNotFound {
		t.Fatalf("not found on a cancelled request: status %d", code)
	}
}
