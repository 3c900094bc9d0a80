package auth

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// FuzzHtpasswd: whatever the htpasswd file holds, every user line that is
// not a comment becomes exactly one user (a line the parser cannot read,
// however long, is an error, never the silent end of the file), costs
// stay within what htpasswd -B writes, and an error is one line naming the
// file that quotes no hash.
func FuzzHtpasswd(f *testing.F) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	good := "alice:" + string(hash)
	salt := strings.Repeat("a", 53)
	for _, s := range []string{
		good, "# users\n\n" + good + "\r\n  bob:" + string(hash) + "  \n", "bob", ":" + string(hash), "bob:$apr1$abc$def",
		"bob:$2y$xx", "bob:$2y$04$short", "bob:$2y$03$" + salt, "bob:$2x$05$" + salt, "bob:$2b$10$" + salt,
		"a:b:" + string(hash),
		// Found by this target: a cost above htpasswd's 17 (31 would take
		// days, at start-up too, for the dummy hash), a user given twice
		// (the last line silently won), and a line longer than the
		// scanner's 64 KiB, which silently ended the file there.
		"bob:$2a$31$" + salt, "bob:$2a$18$" + salt, good + "\n" + good,
		good + "\n#" + strings.Repeat("x", 70<<10) + "\nbob:" + string(hash),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		users, cost, err := parseHtpasswd("/etc/users", data)
		if err != nil {
			checkHtpasswdError(t, data, err)
			return
		}
		if cost < bcrypt.MinCost || cost > maxHtpasswdCost {
			t.Fatalf("cost %d", cost)
		}
		entries := 0
		for l := range strings.Lines(string(data)) {
			if tl := strings.TrimSpace(l); tl != "" && !strings.HasPrefix(tl, "#") {
				entries++
			}
		}
		if len(users) != entries {
			t.Fatalf("%d users from %d entry lines of %q", len(users), entries, data)
		}
		for user, h := range users {
			if user == "" || strings.Contains(user, ":") || !bytes.Contains(data, []byte(user+":"+string(h))) {
				t.Fatalf("user %q with hash %q is not a line of %q", user, h, data)
			}
			if c, err := bcrypt.Cost(h); err != nil || c > cost {
				t.Fatalf("user %q: cost %d (%v) above the highest, %d", user, c, err, cost)
			}
		}
	})
}

// checkHtpasswdError asserts that a refusal names the file, is one line
// and quotes no hash of the file (a user name may be quoted).
func checkHtpasswdError(t *testing.T, data []byte, err error) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, "htpasswd /etc/users") || strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error %q", msg)
	}
	// User names may be quoted: take them out first.
	rest := msg
	for l := range strings.Lines(string(data)) {
		if user, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && user != "" {
			rest = strings.ReplaceAll(rest, strconv.Quote(user), "\x00")
		}
	}
	for l := range strings.Lines(string(data)) {
		_, hash, ok := strings.Cut(strings.TrimSpace(l), ":")
		if i := strings.LastIndexByte(hash, '$'); ok && i >= 0 && len(hash)-i > 8 && strings.Contains(rest, hash[i:]) {
			t.Fatalf("error %q quotes the hash %q", msg, hash)
		}
	}
}
