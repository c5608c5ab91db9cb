package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// This file holds what prefetch and publish share: progress on a terminal,
// and the summary they print.

// progress is told about each path as it is done.
type progress interface {
	start(paths int)
	done(narSize uint64)
	finish()
}

type silent struct{}

func (silent) start(int)   {}
func (silent) done(uint64) {}
func (silent) finish()     {}

// listErrors writes "what: path: error" for each of errs, sorted by path.
func listErrors(w io.Writer, what string, errs map[string]error) {
	paths := make([]string, 0, len(errs))
	for p := range errs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		msg := errs[p].Error()
		if !strings.Contains(msg, p) {
			msg = p + ": " + msg
		}
		fmt.Fprintf(w, "%s: %s\n", what, msg)
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// formatBytes writes n in IEC units, as cache sizes are given.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newBar is a bar of paths done out of a total, described by what.
func newBar(w io.Writer, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("paths"),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

// barProgress shows paths done out of the total, and the bytes so far in
// the description.
type barProgress struct {
	bar   *progressbar.ProgressBar
	what  string
	bytes uint64 // under the caller's lock
}

func (b *barProgress) start(paths int) { b.bar.ChangeMax(paths) }

func (b *barProgress) done(n uint64) {
	b.bytes += n
	b.bar.Describe(b.what + " " + formatBytes(b.bytes))
	_ = b.bar.Add(1)
}

func (b *barProgress) finish() { _ = b.bar.Finish() }

// barWriter prints log lines above the progress bar instead of through it.
type barWriter struct{ bar *progressbar.ProgressBar }

func (w barWriter) Write(b []byte) (int, error) {
	if _, err := progressbar.Bprintf(w.bar, "%s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}
