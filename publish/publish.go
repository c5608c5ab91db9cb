package publish

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"

	"github.com/decross-store/decross-store/pathinfo"
)

// Source is what a cache is published from; *store.Store is one.
type Source interface {
	// ValidPaths lists every path to publish.
	ValidPaths(ctx context.Context) ([]string, error)
	// Problems names the paths that cannot be published, and why.
	Problems(ctx context.Context) map[string]error
	// QueryPathInfo returns a path's signed path info.
	QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error)
	// NarFromPath streams a path's NAR.
	NarFromPath(ctx context.Context, p string) (io.ReadCloser, error)
}

// Compressions are the values Options.Compression takes.
var Compressions = []string{"zstd", "xz", "none"}

// Options configure Publish.
type Options struct {
	// Key is the public half of the key the source signs with. A path
	// whose narinfo in the destination carries a valid signature by it
	// over the same fingerprint is skipped; every published path must
	// carry one.
	Key signature.PublicKey
	// Compression of the NAR files: zstd (the default), xz or none.
	Compression string
	// Jobs is how many paths are published at once (default 1).
	Jobs int
	// Priority is nix-cache-info's Priority (default 50, Nix's default
	// for binary caches; lower is preferred).
	Priority int
	// Start is called once with the number of paths to publish, and Done
	// after each of them (narSize 0 for a skipped or failed path). Calls
	// are serialised.
	Start func(paths int)
	Done  func(narSize uint64)
}

// Result is what Publish did.
type Result struct {
	Total     int    // paths to publish
	Published int    // written
	Skipped   int    // already there
	NarBytes  uint64 // NAR bytes of the written paths
	FileBytes uint64 // their compressed size
	Elapsed   time.Duration
	Failed    map[string]error // paths that could not be written
	Problems  map[string]error // paths the source cannot serve
}

// Publish writes every path of src.ValidPaths into dst with its NAR and
// narinfo, and nix-cache-info if absent. A path that fails does not stop
// the others: it is in Result.Failed, and src.Problems in
// Result.Problems. The error is for a run that could not start (a
// destination that is another cache, an unreadable source) or was
// interrupted.
func Publish(ctx context.Context, src Source, dst Destination, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if _, err := newCompressor(opts.Compression, io.Discard); err != nil {
		return nil, err
	}
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	if opts.Priority == 0 {
		opts.Priority = 50
	}
	if opts.Key.Name == "" {
		return nil, errors.New("no public key to recognise published paths by")
	}
	if err := writeCacheInfo(ctx, dst, opts.Priority); err != nil {
		return nil, err
	}
	paths, err := src.ValidPaths(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Total: len(paths), Failed: make(map[string]error)}
	var mu sync.Mutex
	if opts.Start != nil {
		opts.Start(len(paths))
	}
	var g errgroup.Group
	g.SetLimit(opts.Jobs)
	for _, p := range paths {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			w, err := publishPath(ctx, src, dst, opts, p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if ctx.Err() == nil {
					res.Failed[p] = err
				}
			case w.skipped:
				res.Skipped++
			default:
				res.Published++
				res.NarBytes += w.narSize
				res.FileBytes += w.fileSize
			}
			if opts.Done != nil {
				opts.Done(w.narSize)
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted after %d of %d paths: %w", res.Published+res.Skipped, len(paths), err)
	}
	res.Problems = src.Problems(ctx)
	res.Elapsed = time.Since(start)
	return res, nil
}

// cacheInfo is the nix-cache-info this package writes.
func cacheInfo(priority int) string {
	return fmt.Sprintf("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: %d\n", priority)
}

// writeCacheInfo writes nix-cache-info unless the destination has one.
// One with other settings belongs to another cache, or was written with
// another priority: refused rather than overwritten.
func writeCacheInfo(ctx context.Context, dst Destination, priority int) error {
	want := cacheInfo(priority)
	have, err := dst.Get(ctx, "nix-cache-info")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dst.Put(ctx, "nix-cache-info", "text/x-nix-cache-info", []byte(want))
	case err != nil:
		return fmt.Errorf("read nix-cache-info: %w", err)
	}
	if sameCacheInfo(string(have), want) {
		return nil
	}
	return fmt.Errorf("%s holds other settings than this publish would write (%q, not %q); publish to another destination, or give the --priority it has",
		dst.Where("nix-cache-info"), strings.TrimSpace(string(have)), strings.TrimSpace(want))
}

// sameCacheInfo compares two nix-cache-info files by their fields, so that
// a file written by another tool with the same settings is accepted.
func sameCacheInfo(a, b string) bool {
	fields := func(s string) map[string]string {
		m := map[string]string{}
		for line := range strings.Lines(s) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok {
				m[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		return m
	}
	fa, fb := fields(a), fields(b)
	if len(fa) != len(fb) {
		return false
	}
	for k, v := range fa {
		if fb[k] != v {
			return false
		}
	}
	return true
}

type written struct {
	skipped           bool
	narSize, fileSize uint64
}

// hashPart is the part of a store path a narinfo is named by.
func hashPart(p string) string { return strings.TrimPrefix(p, "/nix/store/")[:32] }

// publishPath writes one path: its NAR, then its narinfo.
func publishPath(ctx context.Context, src Source, dst Destination, opts Options, p string) (written, error) {
	// A job that was waiting for its turn when the run was interrupted
	// must not start writing.
	if err := ctx.Err(); err != nil {
		return written{}, err
	}
	info, err := src.QueryPathInfo(ctx, p)
	if err != nil {
		return written{}, err
	}
	if info == nil {
		return written{}, fmt.Errorf("%s: the source does not serve it", p)
	}
	sigs, err := parseSigs(info)
	if err != nil {
		return written{}, err
	}
	fp := info.Fingerprint()
	if !signedBy(opts.Key, fp, sigs) {
		return written{}, fmt.Errorf("%s: its path info is not signed by %s", p, opts.Key.Name)
	}
	infoKey := hashPart(p) + ".narinfo"
	published, err := alreadyPublished(ctx, dst, infoKey, opts.Key, fp)
	if err != nil {
		return written{}, err
	}
	if published {
		return written{skipped: true}, nil
	}

	narKey, fileHash, fileSize, err := writeNar(ctx, src, dst, opts.Compression, info)
	if err != nil {
		return written{}, err
	}
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         narKey,
		Compression: opts.Compression,
		FileHash:    nixhash.MustNewHashWithEncoding(nixhash.SHA256, fileHash, nixhash.NixBase32, true),
		FileSize:    fileSize,
		NarHash:     nixhash.MustNewHashWithEncoding(nixhash.SHA256, info.NarHash[:], nixhash.NixBase32, true),
		NarSize:     info.NarSize,
		Signatures:  sigs,
		CA:          info.CA,
	}
	for _, r := range info.References {
		ni.References = append(ni.References, path.Base(r))
	}
	sort.Strings(ni.References)
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	if err := dst.Put(ctx, infoKey, "text/x-nix-narinfo", []byte(ni.String())); err != nil {
		return written{}, fmt.Errorf("%s: %w", p, err)
	}
	return written{narSize: info.NarSize, fileSize: fileSize}, nil
}

func parseSigs(info *pathinfo.PathInfo) ([]signature.Signature, error) {
	var sigs []signature.Signature
	for _, s := range info.Sigs {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			return nil, fmt.Errorf("%s: signature %q: %w", info.Path, s, err)
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}

func signedBy(key signature.PublicKey, fingerprint string, sigs []signature.Signature) bool {
	for _, s := range sigs {
		if s.Name == key.Name && key.Verify(fingerprint, s) {
			return true
		}
	}
	return false
}

// narinfoFields are the fields read back from a published narinfo; any
// other line (a field another tool added) is ignored, as Nix does.
var narinfoFields = []string{"StorePath", "NarHash", "NarSize", "References", "Sig"}

// alreadyPublished reports whether the destination's narinfo for key is
// signed by key over fingerprint. A narinfo that cannot be parsed, or is
// not ours, is replaced.
func alreadyPublished(ctx context.Context, dst Destination, infoKey string, key signature.PublicKey, fingerprint string) (bool, error) {
	data, err := dst.Get(ctx, infoKey)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var kept bytes.Buffer
	for line := range bytes.Lines(data) {
		k, _, _ := bytes.Cut(line, []byte(": "))
		for _, f := range narinfoFields {
			if string(k) == f {
				kept.Write(line)
			}
		}
	}
	ni, err := narinfo.Parse(&kept)
	if err != nil || ni.NarHash == nil {
		return false, nil
	}
	return ni.Fingerprint() == fingerprint && signedBy(key, fingerprint, ni.Signatures), nil
}

// extensions of the NAR files, by compression, as Nix names them.
var extensions = map[string]string{"zstd": ".nar.zst", "xz": ".nar.xz", "none": ".nar"}

// newCompressor returns a writer compressing into w.
func newCompressor(compression string, w io.Writer) (io.WriteCloser, error) {
	switch compression {
	case "zstd":
		// One goroutine per encoder: Publish already runs Jobs at once,
		// and memory stays bounded by Jobs windows.
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	case "xz":
		// A 1 MiB dictionary: this encoder allocates about 7 times its
		// dictionary (54 MiB at xz's default 8 MiB), per job.
		return xz.WriterConfig{DictCap: 1 << 20}.NewWriter(w)
	case "none":
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("compression %q: want %s", compression, strings.Join(Compressions, ", "))
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// countingHash hashes and counts what is written through it.
type countingHash struct {
	h hash.Hash
	n uint64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += uint64(len(p))
	return len(p), nil
}

// writeNar compresses the NAR of info.Path into a spooled file while
// hashing the file and checking the NAR against info, then commits the
// file under its content's name. The NAR is verified here as well as by
// the source, because the narinfo written next vouches for it.
func writeNar(ctx context.Context, src Source, dst Destination, compression string, info *pathinfo.PathInfo) (key string, fileHash []byte, fileSize uint64, err error) {
	rc, err := src.NarFromPath(ctx, info.Path)
	if err != nil {
		return "", nil, 0, err
	}
	defer rc.Close()
	f, discard, err := dst.Spool()
	if err != nil {
		return "", nil, 0, fmt.Errorf("%s: spool: %w", info.Path, err)
	}
	committed := false
	defer func() {
		if !committed {
			discard()
		}
	}()
	file := &countingHash{h: sha256.New()}
	buf := bufio.NewWriterSize(io.MultiWriter(f, file), 256<<10)
	cw, err := newCompressor(compression, buf)
	if err != nil {
		return "", nil, 0, err
	}
	nar := &countingHash{h: sha256.New()}
	if _, err := io.Copy(io.MultiWriter(cw, nar), rc); err != nil {
		return "", nil, 0, fmt.Errorf("%s: read NAR: %w", info.Path, err)
	}
	if err := cw.Close(); err != nil {
		return "", nil, 0, fmt.Errorf("%s: compress: %w", info.Path, err)
	}
	if err := buf.Flush(); err != nil {
		return "", nil, 0, fmt.Errorf("%s: spool: %w", info.Path, err)
	}
	var narHash pathinfo.NarHash
	copy(narHash[:], nar.h.Sum(nil))
	if narHash != info.NarHash || nar.n != info.NarSize {
		return "", nil, 0, fmt.Errorf("%s: NAR does not match its path info: %d bytes with hash %s, want %d bytes with hash %s",
			info.Path, nar.n, narHash, info.NarSize, info.NarHash)
	}
	fileHash = file.h.Sum(nil)
	key = "nar/" + nixbase32.EncodeToString(fileHash) + extensions[compression]
	if err := ctx.Err(); err != nil {
		return "", nil, 0, err
	}
	committed = true
	if err := dst.Commit(ctx, key, "application/x-nix-nar", f, int64(file.n)); err != nil {
		return "", nil, 0, fmt.Errorf("%s: %w", info.Path, err)
	}
	return key, fileHash, file.n, nil
}
