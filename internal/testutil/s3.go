package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"go.uber.org/goleak"
)

// S3Server is a real S3 server on a loopback port: versitygw's posix
// backend over a temporary directory, with credentials of its own. A
// value names one bucket of the server; NewBucket gives another view of
// the same server with a fresh bucket.
type S3Server struct {
	// Endpoint is the server's URL (http://127.0.0.1:port).
	Endpoint string
	// Region is what the server and the clients sign with.
	Region string
	// Bucket exists and is empty when the S3Server is returned.
	Bucket string
	// AccessKey and SecretKey are the server's root credentials, random
	// per server.
	AccessKey, SecretKey string

	proc *s3Process
}

// s3Process is the running versitygw.
type s3Process struct {
	cmd  *exec.Cmd
	exit chan struct{}
	log  string // its output
	once sync.Once
}

// StartS3 starts versitygw on a free loopback port with an empty bucket;
// it is killed at the end of the test. It fails (never skips) when
// versitygw is not installed. Starting a server takes a while: tests of a
// package can share one with SharedS3.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	s, err := startS3(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.proc.stop)
	return s
}

// NewBucket creates a new empty bucket on the server and returns the view
// of the server with that bucket.
func (s *S3Server) NewBucket(t testing.TB) *S3Server {
	t.Helper()
	b := *s
	b.Bucket = "b-" + randomHex(8)
	if err := b.createBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &b
}

// DriverParams returns the parameters of distribution's s3 storage driver
// (registry/storage/driver/s3-aws) for the bucket under rootdir: path-style
// requests over plain HTTP to the loopback endpoint, signed with the
// server's credentials.
func (s *S3Server) DriverParams(rootdir string) map[string]any {
	return map[string]any{
		"region":         s.Region,
		"regionendpoint": s.Endpoint,
		"bucket":         s.Bucket,
		"accesskey":      s.AccessKey,
		"secretkey":      s.SecretKey,
		"forcepathstyle": true,
		"secure":         false,
		"v4auth":         true,
		"rootdirectory":  rootdir,
	}
}

// Client returns an S3 client of the SDK the driver uses (aws-sdk-go v1),
// signed with the server's credentials: what a test uses to look at the
// bucket past the driver (multipart uploads, which List never shows).
func (s *S3Server) Client() *s3.S3 {
	sess := session.Must(session.NewSession(aws.NewConfig().
		WithHTTPClient(&http.Client{}).
		WithCredentials(credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, "")).
		WithEndpoint(s.Endpoint).
		WithRegion(s.Region).
		WithS3ForcePathStyle(true).
		WithDisableSSL(true).
		WithMaxRetries(0)))
	return s3.New(sess)
}

func (s *S3Server) createBucket(ctx context.Context) error {
	if _, err := s.Client().CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		return fmt.Errorf("versitygw: creating bucket %s: %w", s.Bucket, err)
	}
	return nil
}

// SharedS3 is one versitygw for a whole test binary: the first test that
// calls Get starts it, every test gets its own bucket (or its own root
// directory in the bucket it is given), and TestMain calls Stop after the
// tests ran. The zero value is ready to use.
type SharedS3 struct {
	once sync.Once
	dir  string
	srv  *S3Server
	err  error
}

var errSharedStopped = errors.New("the shared S3 server was stopped (SharedS3.Get after Stop)")

// Get returns the shared server, started on the first call, with a fresh
// bucket of t's own. It fails t (never skips) when the server cannot
// start; the tests after it fail the same way.
func (sh *SharedS3) Get(t testing.TB) *S3Server {
	t.Helper()
	sh.once.Do(func() {
		if sh.dir, sh.err = os.MkdirTemp("", "versitygw-*"); sh.err != nil {
			return
		}
		// Not the test's context: the server outlives the first test.
		sh.srv, sh.err = startS3(context.Background(), sh.dir)
	})
	if sh.err != nil {
		t.Fatal(sh.err)
	}
	return sh.srv.NewBucket(t)
}

// StopAfter wraps a TestMain's m: its Run runs the tests, then stops the
// server, for goleak.VerifyTestMain(s3.StopAfter(m)) to find the S3
// clients' connections closed.
func (sh *SharedS3) StopAfter(m goleak.TestingM) goleak.TestingM {
	return stopAfter{m, sh}
}

type stopAfter struct {
	m  goleak.TestingM
	sh *SharedS3
}

func (r stopAfter) Run() int {
	defer r.sh.Stop()
	return r.m.Run()
}

// Stop kills the shared server, if one was started, and removes its
// directory.
func (sh *SharedS3) Stop() {
	sh.once.Do(func() { sh.err = errSharedStopped }) // no server may start after Stop
	if sh.srv != nil {
		sh.err = errSharedStopped
		sh.srv.proc.stop()
	}
	if sh.dir != "" {
		_ = os.RemoveAll(sh.dir) // a temporary directory: nothing to do about an error
	}
}

// versitygwPath finds versitygw in PATH or in GOPATH/bin, where
// scripts/install-test-deps.sh puts it.
func versitygwPath() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	for _, gopath := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(gopath, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("versitygw is not installed (neither in PATH nor in GOPATH/bin): run scripts/install-test-deps.sh")
}

// startS3 runs versitygw's posix backend over dir/data with its metadata
// (ETags, content types, the keys of multipart uploads) in files under
// dir/meta, a sidecar directory, rather than in extended attributes,
// which the file system of a temporary directory may not offer (tmpfs
// without user xattrs, some overlays); it waits until the server answers
// and creates the first bucket.
func startS3(ctx context.Context, dir string) (*S3Server, error) {
	bin, err := versitygwPath()
	if err != nil {
		return nil, err
	}
	// The server speaks plain HTTP on loopback: a CA bundle named in the
	// environment is of no use to its clients, and aws-sdk-go v1 applies
	// one by rewriting the transport of http.DefaultClient, which the s3
	// driver uses, at every session it creates: a data race between tests
	// that create drivers while others send requests.
	if err := os.Unsetenv("AWS_CA_BUNDLE"); err != nil {
		return nil, err
	}
	data, meta := filepath.Join(dir, "data"), filepath.Join(dir, "meta")
	for _, d := range []string{data, meta} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	// A port found free may be taken before versitygw binds it: then it
	// exits at once, and another port is tried.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s := &S3Server{Endpoint: "http://" + addr, Region: "us-east-1", Bucket: "b-" + randomHex(8),
			AccessKey: "ak" + randomHex(8), SecretKey: randomHex(20)}
		if s.proc, err = runVersitygw(bin, addr, s, dir, data, meta); err != nil {
			return nil, err
		}
		err = s.awaitBucket(ctx)
		if err == nil {
			return s, nil
		}
		s.proc.stop()
		if !errors.Is(err, errExited) || attempt == 3 {
			return nil, err
		}
	}
}

// errExited reports that versitygw exited while starting.
var errExited = errors.New("versitygw exited at start")

// runVersitygw starts the process. It dies with the test binary
// (Pdeathsig), even when a timeout ends that without cleanups.
func runVersitygw(bin, addr string, s *S3Server, dir, data, meta string) (*s3Process, error) {
	logPath := filepath.Join(dir, "versitygw.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", "--sidecar", meta, data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey, "VGW_REGION="+s.Region)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	p := &s3Process{cmd: cmd, exit: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait() // killed on purpose
		close(p.exit)
	}()
	return p, nil
}

// awaitBucket creates the first bucket, retrying while the server is not
// yet listening, until a deadline.
func (s *S3Server) awaitBucket(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := s.createBucket(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw on %s does not answer: %w (see %s)", s.Endpoint, err, s.proc.log)
		}
		select {
		case <-s.proc.exit:
			out, _ := os.ReadFile(s.proc.log)
			return fmt.Errorf("%w on %s: %s", errExited, s.Endpoint, strings.TrimSpace(string(out)))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop kills the process and waits for it. It may be called more than
// once.
func (p *s3Process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill() // it may have exited
		<-p.exit
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
