package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/gmarcy/container-registry-proxy/internal/flight"
)

// Defaults of credential helper runs.
const (
	// DefaultHelperTTL is how long a helper's answer (credentials or "not
	// found") is reused for a host.
	DefaultHelperTTL = 10 * time.Minute
	// DefaultHelperTimeout bounds one helper run.
	DefaultHelperTimeout = 10 * time.Second
	// helperErrorTTL is how long a helper failure is remembered, so a
	// broken helper is not run for every request.
	helperErrorTTL = 5 * time.Second
	// maxHelperOutput bounds what a helper may print.
	maxHelperOutput = 64 << 10
	// helperNotFound is what the docker-credential-helpers protocol prints
	// when it has no credentials for a server.
	helperNotFound = "credentials not found in native keychain"
)

// ErrHelper wraps every credential helper failure.
var ErrHelper = errors.New("credential helper failed")

// helperResult is a cached helper answer for one host.
type helperResult struct {
	creds   Credentials
	found   bool
	err     error
	fetched time.Time
}

// helpers runs docker-credential-<name> helpers and caches their answers
// per host, one run per host at a time.
type helpers struct {
	ttl    time.Duration
	now    func() time.Time
	flight *flight.Group[helperResult] // helper runs in flight, by helper and host

	mu    sync.Mutex
	cache map[string]helperResult
}

// newHelpers returns an empty helper cache; timeout bounds one lookup
// (every server form of a host it tries).
func newHelpers(ttl, timeout time.Duration, now func() time.Time) *helpers {
	return &helpers{ttl: ttl, now: now, flight: flight.New[helperResult](timeout), cache: map[string]helperResult{}}
}

// get returns the credentials helper name holds for host, from the cache
// when fresh. Concurrent lookups of one host share one helper run, which
// goes on when the caller that started it hangs up; each caller waits on
// its own ctx.
func (h *helpers) get(ctx context.Context, name, host string) (Credentials, bool, error) {
	h.mu.Lock()
	r, ok := h.cache[host]
	h.mu.Unlock()
	if ok && h.fresh(r) {
		return r.creds, r.found, r.err
	}
	r, err := h.flight.Do(ctx, name+"\x00"+host, func(fctx context.Context) (helperResult, error) {
		return h.fetch(fctx, name, host), nil
	})
	if err != nil { // only the caller's ctx ending: fetch reports in r.err
		return Credentials{}, false, fmt.Errorf("%w: docker-credential-%s for %s: %w", ErrHelper, name, host, err)
	}
	return r.creds, r.found, r.err
}

func (h *helpers) fresh(r helperResult) bool {
	ttl := h.ttl
	if r.err != nil {
		ttl = min(ttl, helperErrorTTL)
	}
	age := h.now().Sub(r.fetched)
	return age >= 0 && age < ttl
}

// fetch runs the helper for each server form of host until one answers
// and caches the outcome. An answer cached meanwhile (by a run that ended
// between the caller's look at the cache and this one's start) is taken
// as is.
func (h *helpers) fetch(ctx context.Context, name, host string) helperResult {
	h.mu.Lock()
	r, ok := h.cache[host]
	h.mu.Unlock()
	if ok && h.fresh(r) {
		return r
	}
	res := helperResult{fetched: h.now()}
	for _, server := range helperServerURLs(host) {
		res.creds, res.found, res.err = h.run(ctx, name, server)
		if res.found || res.err != nil {
			break
		}
	}
	if res.err != nil {
		res.err = fmt.Errorf("%w: docker-credential-%s for %s: %w", ErrHelper, name, host, res.err)
	}
	h.mu.Lock()
	h.cache[host] = res
	h.mu.Unlock()
	return res
}

// run executes "docker-credential-<name> get" with server on stdin. The
// error never holds the helper's output: it may contain the secret.
func (h *helpers) run(ctx context.Context, name, server string) (Credentials, bool, error) {
	// name matched helperNameRE when the Docker config was read: no path,
	// nothing a shell would see; the program is looked up in PATH, as
	// docker does.
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get") //nolint:gosec // G204: name is validated, see above
	cmd.Stdin = strings.NewReader(server)
	stdout := &boundedBuffer{max: maxHelperOutput}
	cmd.Stdout = stdout
	cmd.Stderr = &boundedBuffer{max: 4 << 10}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	out := bytes.TrimSpace(stdout.buf.Bytes())
	switch {
	case stdout.over:
		return Credentials{}, false, fmt.Errorf("printed more than %d bytes", maxHelperOutput)
	case ctx.Err() != nil:
		return Credentials{}, false, fmt.Errorf("timed out: %w", ctx.Err())
	case err != nil && bytes.Contains(out, []byte(helperNotFound)):
		return Credentials{}, false, nil
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return Credentials{}, false, fmt.Errorf("exit status %d", ee.ExitCode())
		}
		return Credentials{}, false, err // not found in PATH, …: names the program only
	}
	var resp struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return Credentials{}, false, fmt.Errorf("answered %s", jsonErrorWithoutContent(err))
	}
	if resp.Secret == "" {
		return Credentials{}, false, nil
	}
	return Credentials{Username: resp.Username, Password: resp.Secret}, true, nil
}

// invalidate forgets the answer cached for host.
func (h *helpers) invalidate(host string) {
	h.mu.Lock()
	delete(h.cache, host)
	h.mu.Unlock()
}

// boundedBuffer keeps at most max bytes and remembers that more came.
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return 0, errors.New("output too large")
	}
	return b.buf.Write(p)
}
