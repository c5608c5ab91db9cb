package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/pairing"
	"github.com/decross-store/decross-store/upstream"
)

// repeated collects a flag given several times, in order.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(s string) error { *r = append(*r, s); return nil }

const mapUsage = `usage: decross-store map --native DRV --cross DRV [--native DRV --cross DRV ...]
                         [--pairs FILE] [--pair CROSS=NATIVE ...] [--host-suffix SUFFIX]
                         [--host-system SYSTEM] [--build-system SYSTEM] [--upstream ADDR]
                         [--store-dir DIR] [--allow-build-platform] [--strict] [-v] -o mapping.json

Pairs each native derivation with the cross derivation built for it, walks
both derivation graphs and writes the mapping for the runtime closure of the
built cross outputs. Inputs of paired derivations pair by name, by the
attribute that holds them, or by their place in an attribute; --pair
CROSS=NATIVE (repeatable) settles what that cannot. Problems and
build-platform leaks go to stderr; -v says for each path why it was paired.

`

// maxPairsFile bounds a --pairs file; a pair is two store paths.
const maxPairsFile = 64 << 20

func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mapUsage); fs.PrintDefaults() }
	var natives, crosses repeated
	fs.Var(&natives, "native", "native `.drv` (repeat, in the order of --cross)")
	fs.Var(&crosses, "cross", "cross `.drv` built for the --native at the same position")
	pairsFile := fs.String("pairs", "", `JSON `+"`file`"+` with a list of {"native": DRV, "cross": DRV}; with "root": false, an entry is a --pair`)
	var settle repeated
	fs.Var(&settle, "pair", "pair `CROSS=NATIVE` where the graphs cannot tell: two .drv paths, or two output paths (repeat)")
	suffix := fs.String("host-suffix", "", "host platform suffix of cross names, e.g. -aarch64-unknown-linux-gnu (default: inferred from the roots)")
	hostSystem := fs.String("host-system", "", "Nix `system` the native paths are for, e.g. riscv64-linux (default: the native roots' system)")
	buildSystem := fs.String("build-system", "", "Nix `system` the cross paths were built on (default: the cross roots' system)")
	var up upstreamFlags
	up.register(fs)
	storeDir := fs.String("store-dir", defaultStoreDir, storeDirUsage)
	allowBuild := fs.Bool("allow-build-platform", false, "map build-platform paths (an x86_64 bash in a shebang) to the native path of the same name although their bytes differ")
	strict := fs.Bool("strict", false, "exit with an error when there is any problem or leak")
	verbose := fs.Bool("v", false, "list every path of the runtime closure")
	out := fs.String("o", "", "write the mapping to `file` (- for stdout)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o is required")
	}
	if len(natives) != len(crosses) {
		return fmt.Errorf("%d --native but %d --cross: give them in pairs", len(natives), len(crosses))
	}
	var roots []pairing.Root
	for i := range natives {
		roots = append(roots, pairing.Root{Native: natives[i], Cross: crosses[i]})
	}
	var userPairs []pairing.UserPair
	if *pairsFile != "" {
		more, users, err := readPairs(*pairsFile)
		if err != nil {
			return err
		}
		roots = append(roots, more...)
		userPairs = append(userPairs, users...)
	}
	for _, s := range settle {
		u, err := parsePair(s)
		if err != nil {
			return err
		}
		userPairs = append(userPairs, u)
	}
	if len(roots) == 0 {
		return errors.New("no derivations to pair: give --native and --cross, or --pairs")
	}
	store, closeUpstream, err := up.open(ctx, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer closeUpstream()
	opts := pairing.Options{HostSuffix: *suffix, AllowBuildPlatform: *allowBuild, Derivations: drvSource(*storeDir, store),
		HostSystem: *hostSystem, BuildSystem: *buildSystem}
	opts.Pairs = userPairs
	rep, err := pairing.Map(ctx, store, roots, opts)
	if err != nil {
		return err
	}
	// With --strict a failed map writes nothing: the file may hold the
	// last good mapping, which a server is serving.
	failed := *strict && !rep.OK()
	if !failed {
		if err := writeMapping(rep.Mapping, *out, stdout); err != nil {
			return err
		}
	}
	if *verbose {
		if err := rep.WriteText(stderr); err != nil {
			return err
		}
	} else if err := rep.WriteSummary(stderr); err != nil {
		return err
	}
	if failed {
		return fmt.Errorf("%s, %s; %s left as it was", plural(len(rep.Problems), "problem"), plural(len(rep.Leaks), "leak"), *out)
	}
	fmt.Fprintf(stderr, "wrote %d entries to %s (host system %s, build system %s)\n", rep.Mapping.Len(), *out, rep.Mapping.HostSystem(), rep.Mapping.BuildSystem())
	return nil
}

// pairsEntry is one entry of a --pairs file: a root pair, or with
// "root": false a pair the user settles, as --pair does.
type pairsEntry struct {
	Native string `json:"native"`
	Cross  string `json:"cross"`
	Root   *bool  `json:"root,omitempty"`
}

func readPairs(path string) ([]pairing.Root, []pairing.UserPair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read pairs: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPairsFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read pairs %s: %w", path, err)
	}
	if len(b) > maxPairsFile {
		return nil, nil, fmt.Errorf("read pairs %s: larger than %d bytes", path, maxPairsFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var entries []pairsEntry
	if err := dec.Decode(&entries); err != nil {
		return nil, nil, fmt.Errorf("read pairs %s: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("read pairs %s: trailing data after the JSON list", path)
	}
	var roots []pairing.Root
	var users []pairing.UserPair
	for i, e := range entries {
		if e.Native == "" || e.Cross == "" {
			return nil, nil, fmt.Errorf("read pairs %s: pair %d needs both native and cross", path, i)
		}
		if e.Root == nil || *e.Root {
			roots = append(roots, pairing.Root{Native: e.Native, Cross: e.Cross})
		} else {
			users = append(users, pairing.UserPair{Cross: e.Cross, Native: e.Native})
		}
	}
	return roots, users, nil
}

// parsePair reads CROSS=NATIVE. Store path names may hold "=" but no
// "/", so the separator is the "=" before the native path's "/".
func parsePair(s string) (pairing.UserPair, error) {
	i := strings.Index(s, "=/")
	if i <= 0 {
		return pairing.UserPair{}, fmt.Errorf("--pair %q: want CROSS=NATIVE, two store paths", s)
	}
	return pairing.UserPair{Cross: s[:i], Native: s[i+1:]}, nil
}

// writeMapping writes through a temporary file so that a reader never sees
// half a mapping. A path that is not a regular file (/dev/null, a pipe),
// or any path under /dev or /proc, is written in place: renaming over it
// would replace the device, or the file behind a descriptor, with a new
// file. A path naming one of this process's descriptors (/dev/stdout,
// /dev/fd/N, /proc/self/fd/N) is written to that descriptor, at its
// position, as a shell redirection would.
func writeMapping(m *mapping.Mapping, path string, stdout io.Writer) error {
	if path == "-" {
		return m.Write(stdout)
	}
	if fd, ok := descriptor(path); ok {
		if fd == 1 {
			return m.Write(stdout)
		}
		// A duplicate shares the descriptor's file position; closing it
		// leaves the descriptor itself open.
		dup, err := syscall.Dup(fd)
		if err != nil {
			return fmt.Errorf("write mapping %s: %w", path, err)
		}
		return writeAndClose(m, os.NewFile(uintptr(dup), path), path)
	}
	inPlace := strings.HasPrefix(path, "/dev/") || strings.HasPrefix(path, "/proc/")
	// Through a symlink, replace what it points to, not the link.
	if real, err := filepath.EvalSymlinks(path); err == nil && !inPlace {
		path = real
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		switch {
		case fi.IsDir():
			return fmt.Errorf("write mapping: %s is a directory", path)
		case inPlace || !fi.Mode().IsRegular():
			flags := os.O_WRONLY
			if fi.Mode().IsRegular() {
				flags |= os.O_TRUNC // a file under /dev/shm, say
			}
			f, err := os.OpenFile(path, flags, 0)
			if err != nil {
				return fmt.Errorf("write mapping: %w", err)
			}
			return writeAndClose(m, f, path)
		default:
			mode = fi.Mode().Perm() // an existing file keeps its mode
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mapping-*.json")
	if err != nil {
		return fmt.Errorf("write mapping: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := m.Write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write mapping %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write mapping %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write mapping %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write mapping: %w", err)
	}
	return nil
}

// The upstream is a local daemon, so its store directory is normally
// readable here, and reading .drv files from it saves a daemon connection
// per derivation.
const (
	defaultStoreDir = "/nix/store"
	storeDirUsage   = "read .drv files from `directory` when they hash to their paths, else through the upstream (empty: always through the upstream)"
)

func drvSource(dir string, store upstream.Reader) pairing.DrvSource {
	up := pairing.StoreSource{Store: store}
	if dir == "" {
		return up
	}
	return pairing.DirSource{Dir: dir, Fallback: up}
}

const checkUsage = `usage: decross-store check --mapping mapping.json [--upstream ADDR] [--store-dir DIR] [--host-suffix SUFFIX]
                           [--host-system SYSTEM] [--build-system SYSTEM]

Dry run: lists what the mapping would serve, the platform class of every
path of the cross runtime closure, build-platform leaks with the files that
hold them, and every problem. Exits with an error when there is a problem
or a leak.

`

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage); fs.PrintDefaults() }
	mapFile := fs.String("mapping", "", "mapping `file` to check")
	suffix := fs.String("host-suffix", "", "host platform suffix of cross names (default: inferred from the mapping)")
	hostSystem := fs.String("host-system", "", "Nix `system` the native paths are for (default: the mapping's hostSystem, else inferred)")
	buildSystem := fs.String("build-system", "", "Nix `system` the cross paths were built on (default: the mapping's buildSystem, else inferred)")
	var up upstreamFlags
	up.register(fs)
	storeDir := fs.String("store-dir", defaultStoreDir, storeDirUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *mapFile == "" {
		return errors.New("--mapping is required")
	}
	m, err := mapping.Load(*mapFile)
	if err != nil {
		return err
	}
	store, closeUpstream, err := up.open(ctx, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer closeUpstream()
	rep, err := pairing.Check(ctx, store, m, pairing.Options{HostSuffix: *suffix, Derivations: drvSource(*storeDir, store),
		HostSystem: *hostSystem, BuildSystem: *buildSystem})
	if err != nil {
		return err
	}
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("%s: %s, %s", *mapFile, plural(len(rep.Problems), "problem"), plural(len(rep.Leaks), "leak"))
	}
	return nil
}

// descriptor reports which of this process's file descriptors path names.
func descriptor(path string) (int, bool) {
	switch path {
	case "/dev/stdin":
		return 0, true
	case "/dev/stdout":
		return 1, true
	case "/dev/stderr":
		return 2, true
	}
	for _, dir := range []string{"/dev/fd/", "/proc/self/fd/"} {
		if n, ok := strings.CutPrefix(path, dir); ok {
			fd, err := strconv.Atoi(n)
			return fd, err == nil && fd >= 0
		}
	}
	return 0, false
}

// writeAndClose writes m to f, which it closes, for writeMapping's
// in-place cases.
func writeAndClose(m *mapping.Mapping, f *os.File, path string) error {
	err := m.Write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write mapping %s: %w", path, err)
	}
	return nil
}
