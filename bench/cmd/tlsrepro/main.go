// Command tlsrepro reproduces, with the standard library only, what the
// proxy's CONNECT shim does on a warm blob GET: serve one file over TLS
// (net/http, h2 or HTTP/1.1 by ALPN) to concurrent Go clients, each with
// its own connection. The server runs in a child process so that its CPU
// time is measured apart from the clients'. Server variants isolate the
// costs discussed in bench/notes.md:
//
//	base      http.ServeContent from the file (the mirror's warm path: 32 KiB copies)
//	deadline  base, plus SetWriteDeadline before every write on the
//	          connection under TLS (what shim.SendTimeoutConn does)
//	rec       handler writes of 16375 bytes, so that each h2 DATA frame
//	          (9-byte header + payload) fits in one 16 KiB TLS record
//	big       handler writes of 256 KiB from a 1 MiB buffered file reader
//
//	go run ./bench/cmd/tlsrepro --mode base [--http1] [--size-mib 256] [--clients 8] [--rounds 3]
//
// It prints wall time, throughput and the server's and the clients' CPU
// time per round.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	mode    = flag.String("mode", "base", "server variant: base, deadline, rec or big")
	sizeMiB = flag.Int("size-mib", 256, "size of the random file served")
	file    = flag.String("file", "", "internal: the file to serve")
	clients = flag.Int("clients", 8, "")
	rounds  = flag.Int("rounds", 3, "")
	http1   = flag.Bool("http1", false, "clients speak HTTP/1.1")
	serve   = flag.Bool("serve", false, "internal: be the server")
)

func main() {
	flag.Parse()
	if *serve {
		runServer()
		return
	}
	switch *mode {
	case "base", "deadline", "rec", "big":
	default:
		fmt.Fprintf(os.Stderr, "tlsrepro: --mode %q: want base, deadline, rec or big\n", *mode)
		os.Exit(2)
	}
	f, err := os.CreateTemp("", "tlsrepro-*")
	if err != nil {
		panic(err)
	}
	defer os.Remove(f.Name())
	if _, err := io.CopyN(f, rand.Reader, int64(*sizeMiB)<<20); err != nil {
		panic(err)
	}
	f.Close()
	*file = f.Name()
	runClient()
}

// cert returns a self-signed ECDSA P-256 certificate for 127.0.0.1 (the
// clients skip verification: only the bulk cipher matters here).
func cert() tls.Certificate {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	t := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsrepro"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, t, t, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// deadlineConn sets a write deadline before every write, like
// shim.SendTimeoutConn under the shim's tls.Server.
type deadlineConn struct{ net.Conn }

func (c deadlineConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
	return c.Conn.Write(p)
}

type deadlineListener struct{ net.Listener }

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return deadlineConn{c}, nil
}

// onlyReader and onlyWriter hide WriterTo/ReaderFrom, so that io.CopyBuffer
// uses the given buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func runServer() {
	crt := cert()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	if *mode == "deadline" {
		ln = deadlineListener{ln}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(*file)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		switch *mode {
		case "rec", "big":
			size := 16384 - 9
			if *mode == "big" {
				size = 256 << 10
			}
			w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
			_, _ = io.CopyBuffer(onlyWriter{w}, onlyReader{bufio.NewReaderSize(f, 1<<20)}, make([]byte, size))
		default:
			http.ServeContent(w, r, "", time.Time{}, f)
		}
	})
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{crt}, NextProtos: []string{"h2", "http/1.1"}}}
	fmt.Println(ln.Addr().String())
	// The parent closes stdin (or dies): exit.
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	_ = srv.Serve(tls.NewListener(ln, srv.TLSConfig))
}

// cpu returns the user+system CPU seconds of pid.
func cpu(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

func runClient() {
	cmd := exec.Command(os.Args[0], "--serve", "--mode", *mode, "--file", *file)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	addr, _ := bufio.NewReader(out).ReadString('\n')
	addr = strings.TrimSpace(addr)
	for r := range *rounds {
		c0, s0 := cpu(cmd.Process.Pid), cpu(os.Getpid())
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var total int64
		var proto string
		for range *clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: !*http1, DisableCompression: true} //nolint:gosec // loopback measurement
				if *http1 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://"+addr+"/", nil)
				resp, err := (&http.Client{Transport: tr}).Do(req)
				if err != nil {
					panic(err)
				}
				if resp.StatusCode != http.StatusOK {
					panic(resp.Status)
				}
				n, err := io.CopyBuffer(io.Discard, onlyReader{resp.Body}, make([]byte, 256<<10))
				resp.Body.Close()
				if err != nil {
					panic(err)
				}
				mu.Lock()
				total += n
				proto = resp.Proto
				mu.Unlock()
			}()
		}
		wg.Wait()
		wall := time.Since(start).Seconds()
		fmt.Printf("mode=%s %s round %d: %.2fs %.0f MB/s server CPU %.2fs clients CPU %.2fs\n", *mode, proto, r+1, wall, float64(total)/1e6/wall, cpu(cmd.Process.Pid)-c0, cpu(os.Getpid())-s0)
	}
}
