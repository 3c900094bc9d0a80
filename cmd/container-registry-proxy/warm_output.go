package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal (progress bars) rather than
// a file or pipe (plain lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// warmOutput shows warming as it goes: a progress bar per image with
// bytes and rate on a terminal, one plain line per image otherwise.
type warmOutput struct {
	out, errw io.Writer
	tty       bool

	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

// begin is called when image's size is known.
func (o *warmOutput) begin(image string, total int64) {
	if !o.tty {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(o.out),
		progressbar.OptionSetDescription(image),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionUseANSICodes(true),
	)
}

// progress adds n bytes to the current bar.
func (o *warmOutput) progress(n int64) {
	if !o.tty {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil {
		_ = o.bar.Add64(n)
	}
}

// done prints an image's result line (failures on the error stream).
func (o *warmOutput) done(r warmResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil {
		_ = o.bar.Exit()
		_ = o.bar.Clear()
		o.bar = nil
	}
	if r.Err != nil {
		fmt.Fprintf(o.errw, "failed %s: %s\n", r.Image, oneLine(r.Err))
		return
	}
	fmt.Fprintln(o.out, resultLine(r))
}

// resultLine is one image's plain report, e.g. "warmed
// docker.io/library/alpine:3.20 linux/amd64: 3 blobs, 3.4 MiB in 0.8s (1
// fetched, 2 already cached)".
func resultLine(r warmResult) string {
	return fmt.Sprintf("warmed %s %s: %d blobs, %s in %s (%d fetched, %d already cached)",
		r.Image, platformsOf(r), r.Blobs, human(r.Bytes), roundDur(r.Dur), r.Fetched, r.Cached)
}

func platformsOf(r warmResult) string {
	if len(r.Platforms) == 0 {
		return "-"
	}
	return strings.Join(r.Platforms, ",")
}

func roundDur(d time.Duration) string {
	switch {
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// summary prints the table of every image, in the order given.
func (o *warmOutput) summary(results []warmResult) {
	tw := tabwriter.NewWriter(o.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tPLATFORMS\tBLOBS\tBYTES\tRESULT")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Image, platformsOf(r), r.Blobs, human(r.Bytes), resultWord(r))
	}
	tw.Flush()
}

// resultWord is the RESULT column: ok, or failed with the OCI error code
// (or a short reason).
func resultWord(r warmResult) string {
	if r.Err == nil {
		return "ok"
	}
	var pe *proxyError
	if errors.As(r.Err, &pe) {
		return "failed: " + pe.short()
	}
	msg := oneLine(r.Err)
	if strings.HasPrefix(msg, "no manifest for ") {
		return "failed: " + strings.SplitN(msg, " in the index", 2)[0]
	}
	if r := []rune(msg); len(r) > 40 {
		msg = string(r[:40]) + "…"
	}
	return "failed: " + msg
}
