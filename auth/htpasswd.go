package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Htpasswd holds the proxy's users: user:bcrypt-hash lines, as written by
// `htpasswd -B`. bcrypt is slow on purpose, so successful checks are
// remembered for a short time (by a hash of user and password, never the
// password itself) to keep every request of a pull from paying for it.
type Htpasswd struct {
	users map[string][]byte
	// dummy is a bcrypt hash of a random password at the users' highest
	// cost: an unknown user's password is checked against it, so that a
	// wrong password takes as long whether the user exists or not (no
	// list of valid names from response times).
	dummy []byte

	mu  sync.Mutex
	ok  map[[32]byte]time.Time
	ttl time.Duration
	now func() time.Time
}

// LoadHtpasswd reads an htpasswd file. Only bcrypt entries ($2a$, $2b$,
// $2y$) are accepted; an error names the file and line.
func LoadHtpasswd(path string) (*Htpasswd, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the operator names the file
	if err != nil {
		return nil, fmt.Errorf("htpasswd %s: %w", path, err)
	}
	users, cost, err := parseHtpasswd(path, data)
	if err != nil {
		return nil, err
	}
	h := &Htpasswd{users: users, ok: map[[32]byte]time.Time{}, ttl: 5 * time.Minute, now: time.Now}
	if h.dummy, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), cost); err != nil {
		return nil, fmt.Errorf("htpasswd %s: %w", path, err)
	}
	return h, nil
}

// maxHtpasswdCost is the highest bcrypt cost accepted: htpasswd -B -C
// allows 4 to 17. Each step doubles the time a check takes (17 is about
// 10 s on one core); the bcrypt maximum, 31, would hold a request, and the
// start-up that prepares the dummy hash, for days.
const maxHtpasswdCost = 17

// parseHtpasswd reads the user:bcrypt-hash lines of an htpasswd file
// (path names it in errors, which never quote a hash) and returns the
// users and their highest bcrypt cost.
func parseHtpasswd(path string, data []byte) (map[string][]byte, int, error) {
	users := map[string][]byte{}
	lines := map[string]int{}
	cost := bcrypt.MinCost
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 1
	for ; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		user, hash, ok := strings.Cut(t, ":")
		if !ok || user == "" {
			return nil, 0, fmt.Errorf("htpasswd %s:%d: want user:bcrypt-hash", path, line)
		}
		if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
			return nil, 0, fmt.Errorf("htpasswd %s:%d: user %q: only bcrypt hashes are accepted (htpasswd -B)", path, line, user)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, 0, fmt.Errorf("htpasswd %s:%d: user %q: %w", path, line, user, err)
		}
		if c > maxHtpasswdCost {
			return nil, 0, fmt.Errorf("htpasswd %s:%d: user %q: bcrypt cost %d is above %d (htpasswd -B -C allows 4 to 17)", path, line, user, c, maxHtpasswdCost)
		}
		if prev, dup := lines[user]; dup {
			return nil, 0, fmt.Errorf("htpasswd %s:%d: user %q is already given on line %d", path, line, user, prev)
		}
		users[user], lines[user] = []byte(hash), line
		cost = max(cost, c)
	}
	if err := sc.Err(); err != nil {
		// A line too long for the scanner would otherwise end the file
		// there, silently dropping the users after it.
		return nil, 0, fmt.Errorf("htpasswd %s:%d: %w", path, line, err)
	}
	if len(users) == 0 {
		return nil, 0, fmt.Errorf("htpasswd %s: no users", path)
	}
	return users, cost, nil
}

// Verify reports whether password is user's.
func (h *Htpasswd) Verify(user, password string) bool {
	if h == nil {
		return false
	}
	hash, ok := h.users[user]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(h.dummy, []byte(password)) //nolint:errcheck // the same work as for a known user; the answer is no
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + password + "\x00" + string(hash)))
	now := h.now()
	h.mu.Lock()
	if exp, ok := h.ok[key]; ok && now.Before(exp) {
		h.mu.Unlock()
		return true
	}
	h.mu.Unlock()
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	h.mu.Lock()
	if len(h.ok) > 10000 {
		clear(h.ok)
	}
	h.ok[key] = now.Add(h.ttl)
	h.mu.Unlock()
	return true
}
