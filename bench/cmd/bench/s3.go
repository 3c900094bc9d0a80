package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/gmarcy/container-registry-proxy/bench/internal/harness"
)

// s3Server is versitygw's posix backend on a loopback port, with one
// bucket: the bucket the replicas share (each system and each cold run
// under a root directory of its own). It is what internal/testutil's
// StartS3 runs for the tests, started here with the benchmark's env so
// that it is stopped by PID like every other child.
type s3Server struct {
	proc                 *proc
	endpoint, region     string
	bucket               string
	accessKey, secretKey string
	data, meta           string // the backend's directories: objects as files under data/<bucket>/<key>
	accessLog            string // S3 server access log (one line per request)
}

// versitygwBin finds versitygw: bin when set, else in PATH or in
// GOPATH/bin, where scripts/install-test-deps.sh puts it.
func versitygwBin(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	for _, gopath := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(gopath, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("versitygw is not installed (neither in PATH nor in GOPATH/bin): run scripts/install-test-deps.sh or pass --versitygw-bin")
}

// startS3 starts versitygw (metadata in a sidecar directory, not in
// extended attributes, which a temporary directory may not offer; an
// access log, which s3Ops reads; keep-alive connections, as S3 keeps
// them, unless noKeepAlive) and creates the bucket, retrying while the
// server is not listening yet.
func startS3(ctx context.Context, e *env, bin string, noKeepAlive bool) (*s3Server, error) {
	dir := filepath.Join(e.root, "s3")
	s := &s3Server{region: "us-east-1", bucket: "bench", accessKey: "ak" + randomHex(8), secretKey: randomHex(20),
		data: filepath.Join(dir, "data"), meta: filepath.Join(dir, "meta"), accessLog: filepath.Join(dir, "access.log")}
	for _, d := range []string{s.data, s.meta} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.endpoint = "http://" + addr
	env := []string{"ROOT_ACCESS_KEY=" + s.accessKey, "ROOT_SECRET_KEY=" + s.secretKey, "VGW_REGION=" + s.region}
	args := []string{"--port", addr, "--quiet", "--access-log", s.accessLog}
	if !noKeepAlive {
		args = append(args, "--keep-alive")
	}
	args = append(args, "posix", "--sidecar", s.meta, s.data)
	if s.proc, err = e.startEnv("versitygw", filepath.Join(dir, "versitygw.log"), env, bin, args...); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := s.client().CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.bucket)})
		if err == nil {
			return s, nil
		}
		if perr := s.proc.Exited(); perr != nil {
			return nil, perr
		}
		if time.Now().After(deadline) {
			_ = e.stop(s.proc)
			return nil, fmt.Errorf("versitygw on %s: creating bucket %s: %w; log: %s", s.endpoint, s.bucket, err, harness.Tail(s.proc.Log, 2000))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// client is an S3 client of the SDK the proxy's driver uses, signed with
// the server's credentials.
func (s *s3Server) client() *s3.S3 {
	sess := session.Must(session.NewSession(aws.NewConfig().
		WithHTTPClient(&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}).
		WithCredentials(credentials.NewStaticCredentials(s.accessKey, s.secretKey, "")).
		WithEndpoint(s.endpoint).
		WithRegion(s.region).
		WithS3ForcePathStyle(true).
		WithDisableSSL(true).
		WithMaxRetries(0)))
	return s3.New(sess)
}

// storageYAML is the proxy's storage section for the bucket under root
// (a path starting with /), with redirects to the bucket when redirect.
func (s *s3Server) storageYAML(root string, redirect bool) string {
	y := fmt.Sprintf(`storage:
  s3:
    region: %s
    regionendpoint: %s
    bucket: %s
    accesskey: %s
    secretkey: %s
    forcepathstyle: true
    secure: false
    rootdirectory: %s
`, s.region, s.endpoint, s.bucket, s.accessKey, s.secretKey, root)
	if redirect {
		y += "  redirect: true\n"
	}
	return y
}

// dir is where the posix backend keeps the objects under root.
func (s *s3Server) dir(root string) string {
	return filepath.Join(s.data, s.bucket, strings.TrimPrefix(root, "/"))
}

// remove deletes the objects under root (and their metadata) behind the
// server's back: a cold run's bucket content, once its replicas stopped.
func (s *s3Server) remove(root string) error {
	if err := os.RemoveAll(s.dir(root)); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(s.meta, s.bucket, strings.TrimPrefix(root, "/")))
}

// s3Ops are the requests the S3 server answered, by operation
// (versitygw's names without "s3_": GetObject, HeadObject, UploadPart,
// ...), and the keys copies went to: a commit moves an upload into its
// content-addressed place with the s3 driver, a copy then a delete
// (CopyObject, or a multipart copy, CreateMultipartUpload of the
// destination and UploadPartCopy, past 32 MiB). The access log has no
// sizes of uploaded parts.
type s3Ops struct {
	reqs   map[string]int
	copies map[string]int
}

// commits counts the copies into blob d's place.
func (o s3Ops) commits(d string) int {
	alg, hex, _ := strings.Cut(d, ":")
	suffix := "/blobs/" + alg + "/" + hex[:2] + "/" + hex + "/data"
	n := 0
	for k, v := range o.copies {
		if strings.HasSuffix(k, suffix) {
			n += v
		}
	}
	return n
}

// total is the number of requests.
func (o s3Ops) total() int {
	n := 0
	for _, v := range o.reqs {
		n += v
	}
	return n
}

// logSize is the access log's size: the mark from which opsSince reads.
func (s *s3Server) logSize() int64 {
	fi, err := os.Stat(s.accessLog)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// opsSince reads the access log's lines after offset: S3 access log format,
// the operation 8th, the key 9th (the time, 3rd, holds a space).
func (s *s3Server) opsSince(offset int64) (s3Ops, error) {
	ops := s3Ops{reqs: map[string]int{}, copies: map[string]int{}}
	f, err := os.Open(s.accessLog)
	if err != nil {
		return ops, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ops, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 9 || !strings.HasPrefix(fs[2], "[") {
			continue
		}
		op := strings.TrimPrefix(fs[7], "s3_")
		ops.reqs[op]++
		if op == "CopyObject" || op == "CreateMultipartUpload" && strings.Contains(fs[8], "/blobs/") {
			ops.copies[fs[8]]++
		}
	}
	return ops, sc.Err()
}

// startRedis starts redis-server on a loopback port without persistence
// and waits until it answers PING. It returns the process and host:port.
func startRedis(ctx context.Context, e *env, bin string) (*proc, string, error) {
	dir := filepath.Join(e.root, "redis")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := e.start("redis-server", filepath.Join(dir, "redis.log"), bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := redisPing(ctx, addr)
		if err == nil {
			return p, addr, nil
		}
		if perr := p.Exited(); perr != nil {
			return nil, "", perr
		}
		if time.Now().After(deadline) {
			_ = e.stop(p)
			return nil, "", fmt.Errorf("redis-server on %s does not answer: %w; log: %s", addr, err, harness.Tail(p.Log, 2000))
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// redisPing sends one inline PING.
func redisPing(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// goModVersion is the main module's version in a Go binary's build
// information (versitygw built by go install says "Version: git").
func goModVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return bi.Main.Path + " " + bi.Main.Version
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
