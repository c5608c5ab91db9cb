package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/schollz/progressbar/v3"

	"github.com/decross-store/decross-store/publish"
)

type publishFlags struct {
	config, mapping, signingKey, to, compression, cacheDir, logLevel, logFormat string
	jobs, priority                                                              int
	upstream                                                                    upstreamFlags
}

func newPublishFlags(stderr io.Writer) (*flag.FlagSet, *publishFlags) {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f publishFlags
	fs.StringVar(&f.config, configFlag, "", "TOML `file` of settings (serve's file works: keys of the other commands are ignored); flags given on the command line override it")
	fs.StringVar(&f.mapping, "mapping", "", "mapping file: native path -> cross path (required)")
	fs.StringVar(&f.signingKey, "signing-key", "", "Nix secret signing key file the narinfos are signed with (required)")
	f.upstream.register(fs)
	fs.StringVar(&f.to, "to", "", "binary cache to write: file:///dir or s3://bucket?endpoint=...&region=... (required)")
	fs.StringVar(&f.compression, "compression", "zstd", "compression of the NAR files: "+strings.Join(publish.Compressions, ", "))
	fs.IntVar(&f.priority, "priority", 50, "Priority in the cache's nix-cache-info (lower is preferred by clients); must match an existing nix-cache-info's explicit Priority")
	fs.StringVar(&f.cacheDir, "cache-dir", "state/cache", "directory of rewritten NARs (serve's --cache-dir: a warm cache is not rewritten again)")
	fs.IntVar(&f.jobs, "jobs", runtime.NumCPU(), "paths published in parallel")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default warn)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	return fs, &f
}

// runPublish writes every servable path into a binary cache that static
// file servers can serve without decross-store.
func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newPublishFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.mapping == "" || f.signingKey == "" || f.to == "" {
		return errors.New("--mapping, --signing-key and --to are required")
	}
	if f.jobs < 1 {
		return fmt.Errorf("--jobs %d: want at least 1", f.jobs)
	}
	if !slices.Contains(publish.Compressions, f.compression) {
		return fmt.Errorf("--compression %q: want %s", f.compression, strings.Join(publish.Compressions, ", "))
	}
	if f.priority < 1 {
		return fmt.Errorf("--priority %d: want at least 1", f.priority)
	}
	var bar *progressbar.ProgressBar
	logOut := stderr
	if isTerminal(stderr) {
		bar = newBar(stderr, "publish")
		logOut = barWriter{bar}
	}
	logger, err := newLogger(logOut, f.logFormat, f.logLevel, slog.LevelWarn)
	if err != nil {
		return err
	}
	// Before the store: a wrong destination is reported before any
	// upstream is read.
	dst, err := publish.Open(ctx, f.to, "")
	if err != nil {
		return err
	}
	defer dst.Close()
	st, closeStore, err := openStore(ctx, storeOptions{mapping: f.mapping, upstream: f.upstream, cacheDir: f.cacheDir, signingKey: f.signingKey, noReadAhead: true}, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	key, err := signature.ParsePublicKey(st.PublicKey())
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}

	var p progress = silent{}
	if bar != nil {
		p = &barProgress{bar: bar, what: "publish"}
	}
	res, err := publish.Publish(ctx, st, dst, publish.Options{
		Key:         key,
		Compression: f.compression,
		Jobs:        f.jobs,
		Priority:    f.priority,
		Start:       p.start,
		Done:        p.done,
	})
	p.finish()
	if err != nil {
		return err
	}
	reportPublish(stdout, stderr, res, f.jobs, f.compression)
	return publishErr(res)
}

// reportPublish writes the summary line to stdout, and every path that
// was not published, with why, to stderr.
func reportPublish(stdout, stderr io.Writer, r *publish.Result, jobs int, compression string) {
	fmt.Fprintf(stdout, "published %d of %d servable paths (%s of NAR, %s as %s files) in %v with %d jobs; %d already there; %d failed; %s cannot be served\n",
		r.Published, r.Total, formatBytes(r.NarBytes), formatBytes(r.FileBytes), compression, r.Elapsed.Round(time.Millisecond), jobs,
		r.Skipped, len(r.Failed), plural(len(r.Problems), "mapped path"))
	listErrors(stderr, "cannot be served", r.Problems)
	listErrors(stderr, "failed", r.Failed)
}

// publishErr is the command's verdict: any problem or failure is an error.
func publishErr(r *publish.Result) error {
	var what []string
	if len(r.Failed) > 0 {
		what = append(what, plural(len(r.Failed), "path")+" failed")
	}
	if len(r.Problems) > 0 {
		what = append(what, plural(len(r.Problems), "mapped path")+" cannot be served")
	}
	if len(what) == 0 {
		return nil
	}
	return fmt.Errorf("%s (listed above); the rest is published", strings.Join(what, ", "))
}
