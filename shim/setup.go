package shim

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/template"

	"github.com/gmarcy/container-registry-proxy/oci"
)

//go:embed setup_scripts/*.tmpl
var setupFS embed.FS

// setupTemplates are parsed once; they are read-only after that.
var setupTemplates = template.Must(template.New("setup").Funcs(template.FuncMap{
	"sq": shellQuote,
	"tq": tomlQuote,
}).ParseFS(setupFS, "setup_scripts/*.tmpl"))

// Content types of the setup endpoints.
const (
	caContentType     = "application/x-x509-ca-cert"
	scriptContentType = "text/x-shellscript; charset=utf-8"
	tomlContentType   = "text/plain; charset=utf-8"
)

// SetupRegistry is one registry the proxy caches, as the setup endpoints
// advertise it to clients.
type SetupRegistry struct {
	// Host is the registry host with optional port (quay.io,
	// registry.local:5000).
	Host string
	// Namespace is the first path element under which the mirror serves
	// the registry (the host with ':' replaced by '_' when empty), since
	// containers/image rejects ':' in a mirror path.
	Namespace string
}

// SetupOptions lists what the setup endpoints advertise.
type SetupOptions struct {
	// Registries are the configured registries, in the order to list them.
	Registries []SetupRegistry
	// DockerHub adds Docker Hub (docker.io, API at registry-1.docker.io).
	DockerHub bool
}

// setupEntry is one registry as the templates need it.
type setupEntry struct {
	Prefix    string // registries.conf prefix and location
	Namespace string // mirror path element
	Dir       string // containerd certs.d directory name
	Server    string // containerd server URL
}

// setupData is what every template receives.
type setupData struct {
	Host       string // the proxy's host[:port], as the request reached it
	Proxy      string // http://<Host>
	Registries []setupEntry
}

// SetupHandler serves GET /ca.crt (the CA certificate) and the client setup
// endpoints GET /setup/systemd, /setup/containerd and
// /setup/registries.conf, each pointing clients at the address the request
// came in on (r.Host, which must be a plain host[:port]; no other header is
// trusted). Every other path answers 404.
func SetupHandler(ca *CA, opts SetupOptions) http.Handler {
	entries, err := setupEntries(opts)
	return &setupHandler{ca: ca, entries: entries, err: err}
}

// setupHandler implements SetupHandler.
type setupHandler struct {
	ca      *CA
	entries []setupEntry
	err     error // a configuration problem reported on every setup request
}

// setupError is an error with the HTTP status it answers with; its message
// is safe to show to clients.
type setupError struct {
	status int
	msg    string
}

// Error returns the client-safe message.
func (e *setupError) Error() string { return e.msg }

// ServeHTTP dispatches to serve and turns its error into a one-line
// plain-text answer.
func (h *setupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		status, msg := http.StatusInternalServerError, "internal error"
		var se *setupError
		if errors.As(err, &se) {
			status, msg = se.status, se.msg
		}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		_, _ = fmt.Fprintln(w, msg)
	}
}

// serve answers one request or returns the error to report.
func (h *setupHandler) serve(w http.ResponseWriter, r *http.Request) error {
	var tmpl, ctype string
	switch r.URL.Path {
	case "/ca.crt":
	case "/setup/systemd":
		tmpl, ctype = "systemd.sh.tmpl", scriptContentType
	case "/setup/containerd":
		tmpl, ctype = "containerd.sh.tmpl", scriptContentType
	case "/setup/registries.conf":
		tmpl, ctype = "registries.conf.tmpl", tomlContentType
	default:
		return &setupError{http.StatusNotFound, "404 page not found"}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return &setupError{http.StatusMethodNotAllowed, "method not allowed"}
	}
	if tmpl == "" {
		body := h.ca.PEM()
		w.Header().Set("Content-Type", caContentType)
		w.Header().Set("Content-Disposition", `attachment; filename="ca.crt"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body) //nolint:gosec // G705: the body is our CA certificate, served with its own content type, not HTML from a request
		return nil
	}
	if h.err != nil {
		return &setupError{http.StatusInternalServerError, h.err.Error()}
	}
	if !validProxyHost(r.Host) {
		return &setupError{http.StatusBadRequest, "bad Host header: the setup endpoints need the proxy's host[:port]"}
	}
	var buf bytes.Buffer
	if err := setupTemplates.ExecuteTemplate(&buf, tmpl, setupData{Host: r.Host, Proxy: "http://" + r.Host, Registries: h.entries}); err != nil {
		return fmt.Errorf("rendering %s: %w", tmpl, err)
	}
	w.Header().Set("Content-Type", ctype)
	// The body depends on the Host the request came in on.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
	return nil
}

// setupEntries validates the options and turns them into template entries:
// Docker Hub first when enabled, then each registry once (Docker Hub's
// aliases fold into it).
func setupEntries(opts SetupOptions) ([]setupEntry, error) {
	var out []setupEntry
	seen := map[string]bool{}
	if opts.DockerHub {
		out = append(out, setupEntry{Prefix: oci.DockerHub, Namespace: oci.DockerHub, Dir: oci.DockerHub, Server: "https://" + oci.DockerHubAPI})
		seen[oci.DockerHub] = true
	}
	for _, reg := range opts.Registries {
		host := oci.CanonicalHost(reg.Host)
		if seen[host] {
			continue
		}
		seen[host] = true
		if !validProxyHost(host) {
			return nil, fmt.Errorf("setup: invalid registry host %q in the configuration", reg.Host)
		}
		ns := reg.Namespace
		if ns == "" {
			ns = oci.NamespaceFor(host)
		}
		if host == oci.DockerHub {
			ns = oci.DockerHub
		}
		if !oci.ValidRepository(ns) {
			return nil, fmt.Errorf("setup: invalid namespace %q for registry %q in the configuration", ns, reg.Host)
		}
		server := "https://" + host
		if host == oci.DockerHub {
			server = "https://" + oci.DockerHubAPI
		}
		out = append(out, setupEntry{Prefix: host, Namespace: ns, Dir: host, Server: server})
	}
	return out, nil
}

// validProxyHost reports whether h is a plain host[:port]: a DNS name, an
// IPv4 address or a bracketed IPv6 address, with an optional port in
// 1..65535. Anything else (user info, paths, quotes, spaces) is refused,
// since the value is written into shell scripts and TOML.
func validProxyHost(h string) bool {
	if !oci.ValidHost(h) || len(h) > 261 {
		return false
	}
	host, port := h, ""
	if i := strings.LastIndexByte(h, ']'); strings.HasPrefix(h, "[") {
		host, port = h[1:i], strings.TrimPrefix(h[i+1:], ":")
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return false
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
	}
	if host == "" {
		return false
	}
	if port != "" || strings.HasSuffix(h, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	return true
}

// shellQuote quotes s for a POSIX shell with single quotes.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tomlQuote returns s as a TOML basic string.
func tomlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
