package warm

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

// Output shows warming as it goes: a progress bar per image with bytes
// and rate on a terminal, one plain line per image otherwise; failures go
// to the error stream; Summary prints a table of every image. It
// implements Progress and is safe for concurrent use.
type Output struct {
	out, errOut io.Writer

	mu  sync.Mutex
	tty bool // draw bars; cleared when drawing fails
	bar *progressbar.ProgressBar
}

// NewOutput writes results to out and failures to errOut; it draws
// progress bars when out is a terminal.
func NewOutput(out, errOut io.Writer) *Output {
	return &Output{out: out, errOut: errOut, tty: isTerminal(out)}
}

// isTerminal reports whether w is a terminal (progress bars) rather than
// a file or pipe (plain lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Start implements Progress: a bar for image on a terminal.
func (o *Output) Start(image string, total int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.tty {
		return
	}
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

// Add implements Progress: n more bytes on the bar.
func (o *Output) Add(n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil && o.bar.Add64(n) != nil {
		o.dropBar()
	}
}

// dropBar gives up a bar that cannot be drawn (the terminal failed):
// plain lines from then on. o.mu is held.
func (o *Output) dropBar() {
	o.bar, o.tty = nil, false
}

// Done implements Progress: it clears the bar and prints the image's
// result line, or its failure on the error stream.
func (o *Output) Done(r Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil {
		if err := errors.Join(o.bar.Exit(), o.bar.Clear()); err != nil {
			o.dropBar()
		}
		o.bar = nil
	}
	if r.Err != nil {
		fmt.Fprintf(o.errOut, "failed %s: %s\n", r.Image, oneLine(r.Err))
		return
	}
	fmt.Fprintln(o.out, resultLine(r))
}

// Summary prints the table of every image, in the order given.
func (o *Output) Summary(results []Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	tw := tabwriter.NewWriter(o.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tPLATFORMS\tBLOBS\tBYTES\tRESULT")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Image, platformsOf(r), r.Blobs, human(r.Bytes), resultWord(r))
	}
	tw.Flush()
}

// resultLine is one image's plain report, e.g. "warmed
// docker.io/library/alpine:3.20 linux/amd64: 3 blobs, 3.4 MiB in 0.8s (1
// fetched, 2 already cached)".
func resultLine(r Result) string {
	return fmt.Sprintf("warmed %s %s: %d blobs, %s in %s (%d fetched, %d already cached)",
		r.Image, platformsOf(r), r.Blobs, human(r.Bytes), roundDuration(r.Duration), r.Fetched, r.Cached)
}

// platformsOf is the PLATFORMS column and the result line's platforms.
func platformsOf(r Result) string {
	if len(r.Platforms) == 0 {
		return "-"
	}
	return strings.Join(r.Platforms, ",")
}

// resultWord is the RESULT column: ok; or failed with the proxy's OCI
// error code, the missing platforms, or the start of the message.
func resultWord(r Result) string {
	if r.Err == nil {
		return "ok"
	}
	var fe *FetchError
	if errors.As(r.Err, &fe) && fe.Code() != "" {
		return "failed: " + fe.Code()
	}
	var pe *PlatformError
	if errors.As(r.Err, &pe) {
		return "failed: " + pe.Short()
	}
	msg := oneLine(r.Err)
	if rs := []rune(msg); len(rs) > 40 {
		msg = strings.TrimRight(string(rs[:40]), " ") + "…"
	}
	return "failed: " + msg
}

// roundDuration shows a duration with the precision that matters.
func roundDuration(d time.Duration) string {
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

// human is a byte count in IEC units, "512 B", "3.4 MiB" (as the
// proxy's other tools print it).
func human(n int64) string {
	iecUnits := [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f, unit := float64(n), 0
	for f >= 1024 && unit < len(iecUnits)-1 {
		f /= 1024
		unit++
	}
	if unit == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, iecUnits[unit])
}

// oneLine is err's message on one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
