package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// nginxHead is the part of both nginx configurations outside the server
// block: foreground master with one worker per CPU, logs and temporary
// files in the instance's directory, sendfile on, no access log.
const nginxHead = `%s
worker_processes auto;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path %[2]s/tmp/body;
  proxy_temp_path %[2]s/tmp/proxy;
  fastcgi_temp_path %[2]s/tmp/fastcgi;
  uwsgi_temp_path %[2]s/tmp/uwsgi;
  scgi_temp_path %[2]s/tmp/scgi;
  upstream registry { server %[3]s; keepalive 64; }
`

// nginxCacheServer is the caching reverse proxy: blob GETs (content
// addressed, keyed by digest) go through proxy_cache with
// proxy_cache_lock, so that concurrent clients of one blob wait for a
// single upstream download; everything else (manifests by tag, /v2/) is
// passed to the upstream uncached, with the client's headers (Accept)
// intact. Settings follow the original project (proxy_cache_lock_timeout
// 880s, 200/206 cached for 60 days, Cache-Control ignored) plus
// proxy_cache_lock_age 880s, so that a fill slower than the 5 s default
// does not send a second request upstream: nginx at its best.
const nginxCacheServer = `  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=blobs:16m max_size=64g inactive=60d use_temp_path=off;
  server {
    listen 127.0.0.1:%[2]d backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 900s;
    location ~ "^/v2/.+/blobs/(sha256:[0-9a-f]{64})$" {
      proxy_pass http://registry;
      proxy_cache blobs;
      proxy_cache_key $1;
      proxy_cache_valid 200 206 60d;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 880s;
      proxy_cache_lock_age 880s;
      add_header X-Cache-Status $upstream_cache_status;
    }
    location /v2/ {
      proxy_pass http://registry;
    }
  }
}
`

// nginxStaticServer serves blob GETs from the upstream's own files with
// sendfile (the practical limit of the machine) and passes the rest to the
// upstream.
const nginxStaticServer = `  server {
    listen 127.0.0.1:%[2]d backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location ~ "^/v2/.+/blobs/sha256:([0-9a-f]{2})([0-9a-f]{62})$" {
      alias %[1]s/docker/registry/v2/blobs/sha256/$1/$1$2/data;
    }
    location /v2/ {
      proxy_pass http://registry;
    }
  }
}
`

// startNginx starts nginx in dir, in front of upstream (a base URL): as
// the caching reverse proxy, or with static, serving the blob files under
// the upstream storage root staticRoot. It returns the master process and
// the base URL.
func startNginx(ctx context.Context, e *env, bin, name, dir, upstream, staticRoot string) (*proc, string, error) {
	for _, sub := range []string{"tmp", "cache"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, "", err
		}
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, "", err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	// The temporary directory is private (0700): workers must run as the
	// benchmark's user, which is the default when it is not root.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(nginxHead, user, dir, u.Host)
	if staticRoot != "" {
		conf += fmt.Sprintf(nginxStaticServer, staticRoot, port)
	} else {
		conf += fmt.Sprintf(nginxCacheServer, dir, port)
	}
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := e.start(name, filepath.Join(dir, "stderr.log"), bin, "-p", dir, "-c", cfg, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, "", err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, p, base+"/v2/", http.StatusOK); err != nil {
		_ = e.stop(p)
		return nil, "", fmt.Errorf("%w; error log: %s", err, harness.Tail(filepath.Join(dir, "error.log"), 2000))
	}
	return p, base, nil
}
