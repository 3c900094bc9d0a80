package testreg

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// authorize checks the request against the registry's auth mode and writes
// the 401 challenge when it fails.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request, repo string) bool {
	switch r.opts.Auth {
	case AuthBasic:
		if r.checkBasic(req) {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="testreg"`)
		writeOCIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	case AuthToken:
		action := "pull"
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			action = "push"
		}
		tok, hasTok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if hasTok && r.tokens.valid(tok, repo, action) {
			return true
		}
		challenge := fmt.Sprintf(`Bearer realm=%q,service=%q`, r.TokenURL, Service)
		if repo != "" {
			actions := "pull"
			if action == "push" {
				actions = "pull,push"
			}
			challenge += fmt.Sprintf(`,scope="repository:%s:%s"`, repo, actions)
		}
		if hasTok {
			challenge += `,error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeOCIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	default:
		return true
	}
}

// checkBasic reports whether the request carries the configured credentials.
func (r *Registry) checkBasic(req *http.Request) bool {
	u, p, ok := req.BasicAuth()
	return ok && r.credentialsMatch(u, p)
}

func (r *Registry) credentialsMatch(u, p string) bool {
	return subtle.ConstantTimeCompare([]byte(u), []byte(r.opts.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(r.opts.Password)) == 1
}

// serveToken is the token server: GET /token?service=testreg&scope=… with
// optional Basic credentials, and the OAuth2 POST form containerd prefers.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	sw := r.counted(w, req, KindToken)
	if req.URL.Path != "/token" {
		http.Error(sw, "not found", http.StatusNotFound)
		return
	}
	tr, ok := r.readTokenRequest(sw, req)
	if !ok {
		return
	}
	if tr.service != Service {
		http.Error(sw, fmt.Sprintf("unknown service %q", tr.service), http.StatusBadRequest)
		return
	}
	if !tr.authed && (r.opts.Username != "" || tr.user != "") {
		sw.Header().Set("WWW-Authenticate", `Basic realm="testreg-token"`)
		http.Error(sw, "invalid credentials", http.StatusUnauthorized)
		return
	}
	r.writeToken(sw, tr)
}

// tokenRequest is what a client asked the token server for.
type tokenRequest struct {
	service string
	scopes  []string
	user    string // "" when anonymous
	authed  bool   // the credentials match
	oauth   bool   // the OAuth2 POST form
}

// readTokenRequest reads a GET's query and Basic credentials or a POST's
// form; on a bad request it writes the error and returns false.
func (r *Registry) readTokenRequest(w http.ResponseWriter, req *http.Request) (tokenRequest, bool) {
	switch req.Method {
	case http.MethodGet:
		q := req.URL.Query()
		tr := tokenRequest{service: q.Get("service"), scopes: q["scope"]}
		user, pass, ok := req.BasicAuth()
		tr.authed = ok && r.credentialsMatch(user, pass)
		if ok {
			tr.user = user
		}
		return tr, true
	case http.MethodPost:
		req.Body = http.MaxBytesReader(w, req.Body, 64<<10)
		if err := req.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return tokenRequest{}, false
		}
		if req.PostForm.Get("grant_type") != "password" {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return tokenRequest{}, false
		}
		tr := tokenRequest{service: req.PostForm.Get("service"), scopes: req.PostForm["scope"], oauth: true}
		tr.user = req.PostForm.Get("username")
		tr.authed = r.credentialsMatch(tr.user, req.PostForm.Get("password"))
		return tr, true
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return tokenRequest{}, false
	}
}

// writeToken issues a token for tr's scopes and writes it as JSON, in the
// OAuth2 shape when tr came as a form.
func (r *Registry) writeToken(w http.ResponseWriter, tr tokenRequest) {
	var split []string
	for _, s := range tr.scopes {
		split = append(split, strings.Fields(s)...)
	}
	tok, issued := r.tokens.issue(split)
	resp := map[string]any{"expires_in": r.opts.TokenTTL, "issued_at": issued.Format(time.RFC3339)}
	if tr.oauth {
		resp["access_token"] = tok
		resp["scope"] = strings.Join(split, " ")
	} else {
		resp["token"] = tok
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// ExpireTokens invalidates every token issued so far: their next use gets
// 401 with error="invalid_token".
func (r *Registry) ExpireTokens() { r.tokens.expireAll() }

// tokenStore remembers the opaque tokens the token server issued.
type tokenStore struct {
	mu     sync.Mutex
	ttl    int
	tokens map[string]issuedToken
}

type issuedToken struct {
	expires time.Time
	access  map[string]map[string]bool // repository → actions
}

// issue grants the requested repository scopes ("repository:<name>:<actions>").
func (s *tokenStore) issue(scopes []string) (string, time.Time) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	now := time.Now()
	it := issuedToken{expires: now.Add(time.Duration(s.ttl) * time.Second), access: map[string]map[string]bool{}}
	for _, sc := range scopes {
		typ, rest, ok := strings.Cut(sc, ":")
		i := strings.LastIndex(rest, ":")
		if !ok || i < 0 || !strings.HasPrefix(typ, "repository") {
			continue
		}
		name := rest[:i]
		if it.access[name] == nil {
			it.access[name] = map[string]bool{}
		}
		for _, a := range strings.Split(rest[i+1:], ",") {
			it.access[name][a] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = make(map[string]issuedToken)
	}
	s.tokens[tok] = it
	return tok, now
}

// valid reports whether tok was issued, is unexpired and grants action on
// repo (any valid token will do for repo "").
func (s *tokenStore) valid(tok, repo, action string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.tokens[tok]
	if !ok || time.Now().After(it.expires) {
		return false
	}
	if repo == "" {
		return true
	}
	acts := it.access[repo]
	return acts[action] || acts["*"]
}

func (s *tokenStore) expireAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = nil
}
