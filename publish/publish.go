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
	"maps"
	"path"
	"slices"
	"sort"
	"strconv"
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
	// Priority is nix-cache-info's Priority (default 50; lower is
	// preferred). A cache without Priority has Nix's default, 0.
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
// narinfo, and nix-cache-info if absent. Like nix copy --to, it keeps the
// cache closed under references: a path's narinfo is written only once
// the narinfos of all its references are there, so a client never finds
// a path whose references it cannot fetch, even after an interrupted run.
// NARs are still written Jobs at once, in any order; only the small
// narinfos wait. A path that fails does not stop the others: it is in
// Result.Failed, with every path that references it, and src.Problems in
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
	s := &scheduler{ctx: ctx, dst: dst, done: opts.Done, nodes: make(map[string]*node, len(paths)),
		res: &Result{Total: len(paths), Failed: make(map[string]error)}}
	for _, p := range paths {
		s.nodes[p] = &node{path: p}
	}
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
			prep, err := publishPath(ctx, src, dst, opts, p, s.blocked)
			s.finish(p, prep, err)
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted after %d of %d paths: %w", s.res.Published+s.res.Skipped, len(paths), err)
	}
	s.failStuck()
	s.res.Problems = src.Problems(ctx)
	s.res.Elapsed = time.Since(start)
	return s.res, nil
}

// nodeState is where a path is in a run.
type nodeState int

const (
	running nodeState = iota // its NAR is being written, or it waits for a job
	waiting                  // its NAR is written; its narinfo waits for references
	present                  // its narinfo is in the destination
	failed                   // it is not published
)

// node is one path of a run. Only the narinfo of a waiting path is held in
// memory, never a NAR.
type node struct {
	path    string
	state   nodeState
	missing int     // references not yet present, while waiting
	waiters []*node // waiting paths that reference this one
	prep    prepared
}

// scheduler commits narinfos in dependency order as the paths' NARs are
// written.
type scheduler struct {
	ctx   context.Context
	dst   Destination
	done  func(narSize uint64)
	mu    sync.Mutex
	nodes map[string]*node
	res   *Result
}

// blocked returns why a path with these references cannot be published
// whatever its own NAR does, so that no NAR is written for nothing; nil
// when it may be.
func (s *scheduler) blocked(p string, refs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range refs {
		if err := s.refErr(p, r); err != nil {
			return err
		}
	}
	return nil
}

// refErr says why reference r keeps p from being published, if it does.
func (s *scheduler) refErr(p, r string) error {
	if r == p {
		return nil
	}
	n := s.nodes[r]
	switch {
	case n == nil:
		return fmt.Errorf("not published: its reference %s cannot be served", r)
	case n.state == failed:
		return fmt.Errorf("not published: its reference %s failed", r)
	}
	return nil
}

// finish records the outcome of a path's job, and writes every narinfo
// that no longer waits for a reference.
func (s *scheduler) finish(p string, prep prepared, err error) {
	s.mu.Lock()
	n := s.nodes[p]
	var ready []*node
	switch {
	case err != nil:
		// A path that was interrupted is neither failed nor published.
		if s.ctx.Err() == nil {
			s.fail(n, err)
		}
	case prep.skipped:
		n.state = present
		s.res.Skipped++
		s.report(0)
		ready = s.release(n, ready)
	default:
		n.prep, n.state = prep, waiting
		for _, r := range prep.refs {
			if err := s.refErr(p, r); err != nil {
				s.fail(n, err)
				break
			}
			if ref := s.nodes[r]; r != p && ref.state != present {
				n.missing++
				ref.waiters = append(ref.waiters, n)
			}
		}
		if n.state == waiting && n.missing == 0 {
			ready = append(ready, n)
		}
	}
	s.mu.Unlock()
	s.commit(ready)
}

// commit writes the narinfos of ready paths, and of the paths that were
// waiting only for them, one after the other.
func (s *scheduler) commit(ready []*node) {
	for len(ready) > 0 {
		n := ready[0]
		ready = ready[1:]
		// After an interruption nothing more is written: what is there
		// is closed under references, and the rest waits for a next run.
		if s.ctx.Err() != nil {
			return
		}
		err := s.dst.Put(s.ctx, n.prep.infoKey, "text/x-nix-narinfo", n.prep.narinfo)
		s.mu.Lock()
		if err != nil {
			s.fail(n, fmt.Errorf("%s: %w", n.path, err))
		} else {
			n.state = present
			s.res.Published++
			s.res.NarBytes += n.prep.narSize
			s.res.FileBytes += n.prep.fileSize
			s.report(n.prep.narSize)
			ready = s.release(n, ready)
		}
		n.prep.narinfo = nil
		s.mu.Unlock()
	}
}

// release tells the paths waiting for n that it is present, and appends
// those that wait for nothing else to ready. s.mu is held.
func (s *scheduler) release(n *node, ready []*node) []*node {
	for _, w := range n.waiters {
		if w.state != waiting {
			continue
		}
		w.missing--
		if w.missing == 0 {
			ready = append(ready, w)
		}
	}
	n.waiters = nil
	return ready
}

// fail records that n is not published, and neither is any path waiting
// for it. s.mu is held.
func (s *scheduler) fail(n *node, err error) {
	for todo := []failure{{n, err}}; len(todo) > 0; {
		f := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if f.n.state == failed || f.n.state == present {
			continue
		}
		f.n.state = failed
		f.n.prep.narinfo = nil
		s.res.Failed[f.n.path] = f.err
		s.report(0)
		for _, w := range f.n.waiters {
			todo = append(todo, failure{w, fmt.Errorf("not published: its reference %s failed", f.n.path)})
		}
		f.n.waiters = nil
	}
}

type failure struct {
	n   *node
	err error
}

// failStuck fails the paths still waiting once every job is done: their
// references form a cycle, which a valid store never has.
func (s *scheduler) failStuck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every path waiting for a stuck one is stuck itself: each is named
	// for the cycle, not for the path it waits for.
	for _, p := range slices.Sorted(maps.Keys(s.nodes)) {
		if n := s.nodes[p]; n.state == waiting {
			n.state, n.prep.narinfo, n.waiters = failed, nil, nil
			s.res.Failed[p] = errors.New("not published: its references form a cycle")
			s.report(0)
		}
	}
}

// report calls Options.Done; s.mu is held, which serialises the calls.
func (s *scheduler) report(narSize uint64) {
	if s.done != nil {
		s.done(narSize)
	}
}

// cacheInfo is the nix-cache-info this package writes.
func cacheInfo(priority int) string {
	return fmt.Sprintf("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: %d\n", priority)
}

// writeCacheInfo writes nix-cache-info unless the destination has one.
// An existing one is kept as it is, unless it conflicts with this publish:
// one for another store directory, or with another explicit Priority,
// belongs to another cache or was written with another --priority, and
// is refused rather than overwritten. A field it leaves out takes Nix's
// default (see cacheSettings) and conflicts with nothing: nix copy --to
// writes only StoreDir, and such a cache is published into as it is.
func writeCacheInfo(ctx context.Context, dst Destination, priority int) error {
	want := cacheInfo(priority)
	have, err := dst.Get(ctx, "nix-cache-info")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dst.Put(ctx, "nix-cache-info", "text/x-nix-cache-info", []byte(want))
	case err != nil:
		return fmt.Errorf("read nix-cache-info: %w", err)
	}
	got, err := parseCacheInfo(string(have))
	if err != nil {
		return fmt.Errorf("%s: %w", dst.Where("nix-cache-info"), err)
	}
	if got.storeDir != "/nix/store" {
		return fmt.Errorf("%s is for store %s, not /nix/store: publish to another destination",
			dst.Where("nix-cache-info"), got.storeDir)
	}
	if got.priorityGiven && got.priority != priority {
		return fmt.Errorf("%s holds other settings than this publish would write (Priority: %d, not %d): give --priority %d to publish into this cache, or publish to another destination",
			dst.Where("nix-cache-info"), got.priority, priority, got.priority)
	}
	return nil
}

// cacheSettings are the fields of a nix-cache-info that can conflict. A
// missing field has the default Nix's BinaryCacheStore gives it: StoreDir
// is not checked (the client's store, /nix/store here), and Priority is
// the store setting's default, 0. WantMassQuery (default false) is a hint
// to clients and never conflicts.
type cacheSettings struct {
	storeDir      string
	priority      int
	priorityGiven bool
}

// parseCacheInfo reads a nix-cache-info as Nix does: "Key: value" lines,
// values trimmed, other lines and unknown keys ignored.
func parseCacheInfo(s string) (cacheSettings, error) {
	c := cacheSettings{storeDir: "/nix/store"}
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "StoreDir":
			c.storeDir = v
		case "Priority":
			n, err := strconv.Atoi(v)
			if err != nil {
				return c, fmt.Errorf("field Priority: %q is not a number", v)
			}
			c.priority, c.priorityGiven = n, true
		}
	}
	return c, nil
}

// prepared is a path whose NAR is written, with the narinfo to write once
// its references are present; or a path already published.
type prepared struct {
	skipped           bool
	infoKey           string
	narinfo           []byte
	refs              []string
	narSize, fileSize uint64
}

// hashPart is the part of a store path a narinfo is named by.
func hashPart(p string) string { return strings.TrimPrefix(p, "/nix/store/")[:32] }

// publishPath writes one path's NAR and returns its narinfo, unless the
// path is published already or blocked (see scheduler.blocked) by its
// references.
func publishPath(ctx context.Context, src Source, dst Destination, opts Options, p string, blocked func(p string, refs []string) error) (prepared, error) {
	// A job that was waiting for its turn when the run was interrupted
	// must not start writing.
	if err := ctx.Err(); err != nil {
		return prepared{}, err
	}
	info, err := src.QueryPathInfo(ctx, p)
	if err != nil {
		return prepared{}, err
	}
	if info == nil {
		return prepared{}, fmt.Errorf("%s: the source does not serve it", p)
	}
	sigs, err := parseSigs(info)
	if err != nil {
		return prepared{}, err
	}
	fp := info.Fingerprint()
	if !signedBy(opts.Key, fp, sigs) {
		return prepared{}, fmt.Errorf("%s: its path info is not signed by %s", p, opts.Key.Name)
	}
	infoKey := hashPart(p) + ".narinfo"
	published, err := alreadyPublished(ctx, dst, infoKey, opts.Key, fp)
	if err != nil {
		return prepared{}, err
	}
	if published {
		return prepared{skipped: true}, nil
	}
	if err := blocked(p, info.References); err != nil {
		return prepared{}, err
	}

	narKey, fileHash, fileSize, err := writeNar(ctx, src, dst, opts.Compression, info)
	if err != nil {
		return prepared{}, err
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
	return prepared{infoKey: infoKey, narinfo: []byte(ni.String()), refs: info.References, narSize: info.NarSize, fileSize: fileSize}, nil
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
var narinfoFields = []string{"StorePath", "URL", "FileSize", "NarHash", "NarSize", "References", "Sig"}

// alreadyPublished reports whether the destination's narinfo for key is
// signed by key over fingerprint and the NAR file it names is there, of
// the size it gives. A narinfo that cannot be parsed, or is not ours, is
// replaced; so is one whose NAR was deleted or cut short, which would
// otherwise never be repaired.
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
	if ni.Fingerprint() != fingerprint || !signedBy(key, fingerprint, ni.Signatures) {
		return false, nil
	}
	// A URL this package would not write (absolute, or leaving the
	// cache) is not checked: the path is written again.
	if !fs.ValidPath(ni.URL) || !strings.HasPrefix(ni.URL, "nar/") {
		return false, nil
	}
	size, err := dst.Size(ctx, ni.URL)
	if err != nil {
		return false, fmt.Errorf("%s: %w", infoKey, err)
	}
	if ni.FileSize > 0 {
		return size == int64(ni.FileSize), nil
	}
	return size > 0, nil
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
