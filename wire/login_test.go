package wire

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The login ID and confirmation code of a fixed secret, as docs/api.md
// gives them.
func TestLoginVector(t *testing.T) {
	const secret = "AAAAAAAAAAAAAAAAAAAAAA"
	id := LoginID(secret)
	code := LoginCode(id)
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "secret\n`" + secret + "` → login ID `" + id + "`, code `" + code + "`."
	if !strings.Contains(strings.Join(strings.Fields(string(doc)), " "), strings.Join(strings.Fields(want), " ")) {
		t.Errorf("docs/api.md does not give login ID %s and code %s for secret %s", id, code, secret)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(id) || !regexp.MustCompile(`^[0-9]{3}-[0-9]{3}$`).MatchString(code) {
		t.Errorf("login ID %q, code %q", id, code)
	}
}
