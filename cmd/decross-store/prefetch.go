package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"

	"github.com/decross-store/decross-store/narcache"
)

type prefetchFlags struct {
	config, mapping, cacheDir, logLevel, logFormat string
	jobs                                           int
	cacheMaxSize                                   narcache.Size
	upstream                                       upstreamFlags
}

// newPrefetchFlags declares prefetch's flags; the names and defaults
// shared with serve are the same, so that one configuration file serves
// both.
func newPrefetchFlags(stderr io.Writer) (*flag.FlagSet, *prefetchFlags) {
	fs := flag.NewFlagSet("prefetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f prefetchFlags
	fs.StringVar(&f.config, configFlag, "", "TOML `file` of settings (serve's file works: keys of serve's other flags are ignored); flags given on the command line override it")
	fs.StringVar(&f.mapping, "mapping", "", "mapping file: native path -> cross path (required)")
	f.upstream.register(fs)
	fs.StringVar(&f.cacheDir, "cache-dir", "state/cache", "directory of rewritten NARs and their path info (serve's --cache-dir)")
	fs.Var(&f.cacheMaxSize, "cache-max-size", cacheMaxSizeUsage)
	fs.IntVar(&f.jobs, "jobs", runtime.NumCPU(), "paths prepared in parallel")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default warn; info logs every rewrite)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	return fs, &f
}

// runPrefetch prepares every servable path into the cache, so that the
// first client of a fresh cache does not wait for rewrites.
func runPrefetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newPrefetchFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.mapping == "" {
		return errors.New("--mapping is required")
	}
	if f.jobs < 1 {
		return fmt.Errorf("--jobs %d: want at least 1", f.jobs)
	}
	var bar *progressbar.ProgressBar
	logOut := stderr
	if isTerminal(stderr) {
		bar = newBar(stderr, "prefetch")
		logOut = barWriter{bar}
	}
	logger, err := newLogger(logOut, f.logFormat, f.logLevel, slog.LevelWarn)
	if err != nil {
		return err
	}
	st, closeStore, err := openStore(ctx, storeOptions{mapping: f.mapping, upstream: f.upstream, cacheDir: f.cacheDir, cacheMaxSize: f.cacheMaxSize, noReadAhead: true}, logger)
	if err != nil {
		return err
	}
	defer closeStore()

	var p progress = silent{}
	if bar != nil {
		p = &barProgress{bar: bar, what: "prefetch"}
	}
	res, err := prefetch(ctx, st, f.jobs, p)
	p.finish()
	if err != nil {
		return err
	}
	res.report(stdout)
	return res.err()
}

// prefetchStore is what prefetch needs of *store.Store.
type prefetchStore interface {
	ValidPaths(ctx context.Context) ([]string, error)
	Prefetch(ctx context.Context, p string) (narSize uint64, err error)
	Problems(ctx context.Context) map[string]error
}

// prefetchResult is what a prefetch did.
type prefetchResult struct {
	jobs     int
	total    int    // servable
	paths    int    // prepared
	bytes    uint64 // NAR bytes of the prepared paths
	elapsed  time.Duration
	failed   map[string]error // servable paths whose preparation failed
	problems map[string]error // mapped paths that cannot be served
}

// prefetch prepares every path of st.ValidPaths with up to jobs at once.
// A failed path does not stop the others; the error is for a run that
// could not list the paths or was interrupted.
func prefetch(ctx context.Context, st prefetchStore, jobs int, p progress) (*prefetchResult, error) {
	start := time.Now()
	paths, err := st.ValidPaths(ctx)
	if err != nil {
		return nil, err
	}
	p.start(len(paths))
	res := &prefetchResult{jobs: jobs, total: len(paths), failed: make(map[string]error)}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(jobs)
	for _, path := range paths {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			n, err := st.Prefetch(ctx, path)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.failed[path] = err
			} else {
				res.paths++
				res.bytes += n
			}
			p.done(n)
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted after %d of %d paths: %w", res.paths, len(paths), err)
	}
	res.problems = st.Problems(ctx)
	res.elapsed = time.Since(start)
	return res, nil
}

// report writes the summary line, then every problem and failure.
func (r *prefetchResult) report(w io.Writer) {
	fmt.Fprintf(w, "prefetched %d of %d servable paths (%s) in %v with %d jobs; %d failed; %s cannot be served\n",
		r.paths, r.total, formatBytes(r.bytes), r.elapsed.Round(time.Millisecond), r.jobs, len(r.failed), plural(len(r.problems), "mapped path"))
	listErrors(w, "cannot be served", r.problems)
	listErrors(w, "failed", r.failed)
}

// err is the command's verdict: any problem or failure is an error.
func (r *prefetchResult) err() error {
	var what []string
	if len(r.failed) > 0 {
		what = append(what, plural(len(r.failed), "path")+" failed")
	}
	if len(r.problems) > 0 {
		what = append(what, plural(len(r.problems), "mapped path")+" cannot be served")
	}
	if len(what) == 0 {
		return nil
	}
	return fmt.Errorf("%s (listed above)", strings.Join(what, ", "))
}
