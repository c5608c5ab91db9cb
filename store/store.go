package store

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/storepath"
	"golang.org/x/sync/singleflight"

	"github.com/decross-store/decross-store/internal/asynchash"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/rewrite"
	"github.com/decross-store/decross-store/upstream"
)

// Config is what a Store is made of.
type Config struct {
	Mapping    *mapping.Mapping
	Upstream   upstream.Reader // where cross builds are read
	Cache      *narcache.Cache
	SigningKey *signature.SecretKey // nil: path info is unsigned (enough to warm the cache)
	Logger     *slog.Logger         // nil discards
	Now        func() time.Time     // the clock: registration times, rewalk intervals; nil = time.Now
	Rewrite    rewrite.Options      // zero value = the rewriter's defaults

	// Limits on upstream work, which runs detached from the requests that
	// wait for it (they share it), so that a stuck upstream fails the work
	// rather than holding it forever. Zero selects the default.
	UpstreamQueryTimeout time.Duration // one path info query (default 1 minute)
	UpstreamStallTimeout time.Duration // no NAR bytes for this long (default 2 minutes)

	// Rewrites bounds the rewrites running at once (default: the number
	// of CPUs, at least 4: a rewrite of a small path waits on the upstream
	// and the disk as much as on a CPU).
	Rewrites int
	// NoReadAhead turns off preparing the references of a path in the
	// background once the path is asked for (for a caller that prepares
	// every path itself, like prefetch).
	NoReadAhead bool

	Hooks Hooks
}

// Hooks observe the store's work, for metrics. Nil fields are skipped;
// the others are called synchronously, so they must be quick and safe for
// concurrent use.
type Hooks struct {
	// Rewrote: a path was rewritten from an upstream NAR of upstreamBytes
	// into a cached NAR of servedBytes.
	Rewrote   func(upstreamBytes, servedBytes uint64, took time.Duration)
	CacheHit  func() // a path was prepared from a cache entry
	CacheMiss func() // a path had no usable cache entry and is rewritten
	// Upstream: one upstream request ("QueryPathInfo", "NarFromPath"; for
	// a NAR, the time to its first byte) ended.
	Upstream func(op string, took time.Duration, err error)
}

// Store serves native paths. It is safe for concurrent use.
type Store struct {
	cfg      Config
	log      *slog.Logger
	rewriter *rewrite.Rewriter
	// tooLong holds mapped native paths longer than their cross path: they
	// cannot be rewritten in place and are reported, not served.
	tooLong  map[string]bool
	byHash   map[string]string // native hash part -> native path
	cacheKey string            // part of every cache key: rewriter settings

	upstreamInfo sync.Map // path -> *pathinfo.PathInfo (valid paths only)
	infoFlight   singleflight.Group
	closureOK    sync.Map // cross or CA path -> struct{}: closure known servable
	prepFlight   singleflight.Group
	prepared     sync.Map      // served path -> *prepared
	builds       chan struct{} // semaphore: rewrites running at once

	// Read-ahead: references of asked-for paths, prepared in the
	// background by a fixed set of workers. The queue is bounded and
	// drops what does not fit (the client asks for it anyway), so memory
	// does not grow with the closure.
	ahead       chan string
	aheadQueued sync.Map // path -> struct{}: in ahead, or being prepared from it
	aheadFailed sync.Map // path -> time.Time: when its read-ahead last failed
	aheadStart  sync.Once
	aheadDone   sync.WaitGroup

	// life is cancelled by Close: shared work runs in it, detached from
	// the requests waiting for it.
	life context.Context
	stop context.CancelFunc

	work workTracker // shared work in progress

	caFlight   singleflight.Group
	caMu       sync.Mutex
	caIndex    map[string]bool // content-addressed paths found in mapped closures
	caComplete bool            // every mapped closure has been walked without error
	caWalked   time.Time       // when the last (incomplete) walk ended
}

type prepared struct {
	entry *narcache.Entry
	info  *pathinfo.PathInfo // signed
}

// caRewalkInterval bounds how often unknown paths trigger another walk of
// mapped closures that could not be walked completely (a cross path not
// built yet, say): later builds are picked up without a restart, but a
// client probing many unknown paths costs at most one walk per interval.
const caRewalkInterval = 10 * time.Second

// New validates the configuration and builds the rewriter for the mapping.
func New(cfg Config) (*Store, error) {
	if cfg.Mapping == nil || cfg.Upstream == nil || cfg.Cache == nil {
		return nil, errors.New("new store: mapping, upstream and cache are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UpstreamQueryTimeout <= 0 {
		cfg.UpstreamQueryTimeout = time.Minute
	}
	if cfg.UpstreamStallTimeout <= 0 {
		cfg.UpstreamStallTimeout = 2 * time.Minute
	}
	s := &Store{
		cfg:     cfg,
		log:     cfg.Logger,
		tooLong: make(map[string]bool),
		byHash:  make(map[string]string),
		caIndex: make(map[string]bool),
	}
	rewrites := cfg.Rewrites
	if rewrites <= 0 {
		rewrites = max(4, runtime.GOMAXPROCS(0))
	}
	s.builds = make(chan struct{}, rewrites)
	s.ahead = make(chan string, aheadQueue)
	s.life, s.stop = context.WithCancel(context.Background())
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var repls []rewrite.Replacement
	var forbidden []string
	for _, e := range cfg.Mapping.Entries() {
		s.byHash[hashPart(e.Native)] = e.Native
		forbidden = append(forbidden, hashPart(e.Cross))
		if len(e.Native) > len(e.Cross) {
			s.tooLong[e.Native] = true
			continue
		}
		repls = append(repls, rewrite.Replacement{From: e.Cross, To: e.Native})
	}
	opts := cfg.Rewrite
	opts.Forbidden = append(append([]string(nil), opts.Forbidden...), forbidden...)
	if opts.TempDir == "" {
		// Large archives are spooled while their checksums are fixed:
		// next to the cache they go to anyway, not into a $TMPDIR that
		// may be a small tmpfs.
		opts.TempDir = cfg.Cache.Dir()
	}
	rw, err := rewrite.New(repls, opts)
	if err != nil {
		return nil, fmt.Errorf("new store: %w", err)
	}
	s.rewriter = rw
	textMax := opts.TextMax
	if textMax == 0 {
		textMax = rewrite.DefaultTextMax
	}
	// Bump rewriteVersion whenever the rewriter's output for the same input
	// changes, so caches from older releases are rebuilt.
	const rewriteVersion = 2 // 2: zip and tar checksums fixed, .py/.elc/.info padded
	s.cacheKey = fmt.Sprintf("rewrite v%d textMax=%d", rewriteVersion, textMax)
	return s, nil
}

// aheadQueue bounds the paths waiting for read-ahead.
const aheadQueue = 4096

// aheadWorkers is how many rewrites read-ahead may run at once: one fewer
// than the rewrite limit, so that a path a client asks for never waits
// behind read-ahead for a slot (none with a single slot).
func (s *Store) aheadWorkers() int { return cap(s.builds) - 1 }

// aheadRetryAfter is how long read-ahead leaves alone a path whose
// preparation failed: every referrer of a broken dependency would
// otherwise download it again. A client asking for it still tries.
const aheadRetryAfter = time.Minute

// readAhead queues the served references of src for preparation in the
// background: a client that asked for a path asks for its references
// next, one at a time, and would otherwise wait for each rewrite in turn.
func (s *Store) readAhead(src *source) {
	if s.cfg.NoReadAhead || s.aheadWorkers() == 0 || s.life.Err() != nil {
		return
	}
	s.aheadStart.Do(func() {
		for range s.aheadWorkers() {
			s.aheadDone.Add(1)
			go s.aheadWorker()
		}
	})
	for _, r := range s.mappedReferences(src) {
		if r == src.served {
			continue
		}
		if _, ok := s.prepared.Load(r); ok {
			continue
		}
		if at, failed := s.aheadFailed.Load(r); failed && s.cfg.Now().Sub(at.(time.Time)) < aheadRetryAfter {
			continue
		}
		if _, queued := s.aheadQueued.LoadOrStore(r, struct{}{}); queued {
			continue
		}
		select {
		case s.ahead <- r:
		default:
			s.aheadQueued.Delete(r) // full: the client will ask for it
		}
	}
}

func (s *Store) aheadWorker() {
	defer s.aheadDone.Done()
	for {
		select {
		case <-s.life.Done():
			return
		case p := <-s.ahead:
			if s.life.Err() != nil {
				return
			}
			// Errors are not reported: nobody asked yet, and the client
			// that does will get them.
			if _, err := s.prepare(s.life, p); err != nil && s.life.Err() == nil {
				s.log.Debug("read-ahead failed", "path", p, "error", err)
				s.aheadFailed.Store(p, s.cfg.Now())
			} else {
				s.aheadFailed.Delete(p)
			}
			s.aheadQueued.Delete(p)
		}
	}
}

// Close cancels the work in progress (rewrites are detached from the
// requests that started them) and read-ahead, and waits for them to end,
// so that nothing writes to the cache afterwards.
func (s *Store) Close() {
	s.stop()
	s.aheadDone.Wait()
	s.work.close()
}

// workTracker counts work in progress and waits for it to end. Unlike a
// sync.WaitGroup it may see new work while close waits: that work is
// refused.
type workTracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   *sync.Cond
}

func (t *workTracker) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *workTracker) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 && t.idle != nil {
		t.idle.Broadcast()
	}
}

func (t *workTracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.idle == nil {
		t.idle = sync.NewCond(&t.mu)
	}
	for t.n > 0 {
		t.idle.Wait()
	}
}

func hashPart(p string) string { return p[len(storepath.StoreDir)+1:][:32] }

// upstreamPathInfo is QueryPathInfo on the upstream, memoised: path info of
// a valid path never changes while it stays valid.
func (s *Store) upstreamPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	if v, ok := s.upstreamInfo.Load(p); ok {
		return v.(*pathinfo.PathInfo), nil
	}
	v, err := s.shared(ctx, &s.infoFlight, p, func(work context.Context) (any, error) {
		work, cancel := context.WithTimeout(work, s.cfg.UpstreamQueryTimeout)
		defer cancel()
		start := time.Now()
		info, err := s.cfg.Upstream.QueryPathInfo(work, p)
		if h := s.cfg.Hooks.Upstream; h != nil {
			h("QueryPathInfo", time.Since(start), err)
		}
		if errors.Is(err, upstream.ErrUnusable) {
			return nil, err // it names the path and why, for a client to read
		}
		if err != nil {
			return nil, fmt.Errorf("upstream query path info %s: %w", p, err)
		}
		if info != nil {
			s.upstreamInfo.Store(p, info)
		}
		return info, nil
	})
	if err != nil {
		return nil, err
	}
	info, _ := v.(*pathinfo.PathInfo)
	return info, nil
}

// shared runs fn once for all concurrent callers with the same key. fn
// runs detached from any caller's cancellation, since others may wait for
// it (Close cancels it); each caller waits only as long as its own ctx
// allows. A panic in fn becomes an error for its callers instead of
// killing the server.
func (s *Store) shared(ctx context.Context, g *singleflight.Group, key string, fn func(work context.Context) (any, error)) (any, error) {
	work := s.life
	ch := g.DoChan(key, func() (v any, err error) {
		if !s.work.begin() {
			return nil, errors.New("store closed")
		}
		defer s.work.end()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic while preparing a path", "key", key, "panic", r, "stack", string(debug.Stack()))
				err = fmt.Errorf("internal error while preparing %s: %v", key, r)
			}
		}()
		return fn(work)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ErrNotServed is matched (errors.Is) by the errors that say why this
// store does not serve a path: a leak, an unmapped reference, a cross path
// not built, an untrusted upstream. A door answers such a path as absent
// (the worker protocol's "not valid", an HTTP 404), with the error's text
// as the reason; other errors are failures of the store or its upstream.
var ErrNotServed = errors.New("path not served")

// notServedError says why this store does not serve a path it knows of.
// Its text contains "is not valid", which Nix clients read as an invalid
// path (so a substituter list moves on to the next one).
type notServedError struct {
	path string
	why  error
}

func (e *notServedError) Error() string {
	return fmt.Sprintf("path '%s' is not valid in this store: %v", e.path, e.why)
}

func (e *notServedError) Unwrap() error { return e.why }

func (e *notServedError) Is(target error) bool { return target == ErrNotServed }

// closureProblem marks what walkClosure found wrong, as opposed to a
// failure to ask the upstream.
type closureProblem struct{ msg string }

func (e *closureProblem) Error() string { return e.msg }

func problemf(format string, args ...any) error {
	return &closureProblem{msg: fmt.Sprintf(format, args...)}
}

// source is what a served path is made from.
type source struct {
	served string
	from   string        // upstream path: the cross path, or served itself for CA paths
	entry  mapping.Entry // zero for CA paths
	info   *pathinfo.PathInfo
}

func (src *source) isCA() bool { return src.entry.Cross == "" }

// resolve finds what served is made from, or nil when this store does not
// serve it. A mapped path that cannot be served is a *notServedError.
func (s *Store) resolve(ctx context.Context, served string) (*source, error) {
	if e, ok := s.cfg.Mapping.ByNative(served); ok {
		notServed := func(format string, args ...any) error {
			return &notServedError{path: served, why: fmt.Errorf(format, args...)}
		}
		if s.tooLong[served] {
			return nil, notServed("it is longer than its cross path %s, so binaries cannot be rewritten in place", e.Cross)
		}
		info, err := s.upstreamPathInfo(ctx, e.Cross)
		if errors.Is(err, upstream.ErrUnusable) {
			return nil, notServed("its cross path cannot be used: %w", err)
		}
		if err != nil {
			return nil, err
		}
		if info == nil {
			return nil, notServed("its cross path %s is not valid in the upstream store (not built, or garbage-collected)", e.Cross)
		}
		if err := s.checkClosure(ctx, e.Cross); err != nil {
			if problem := (*closureProblem)(nil); errors.As(err, &problem) {
				return nil, notServed("cannot serve it from %s: %w", e.Cross, err)
			}
			return nil, err
		}
		return &source{served: served, from: e.Cross, entry: e, info: info}, nil
	}
	if _, ok := s.cfg.Mapping.ByCross(served); ok {
		// Cross paths are what we hide, never what we serve.
		return nil, nil
	}
	ok, err := s.isServedCA(ctx, served)
	if err != nil || !ok {
		return nil, err
	}
	info, err := s.upstreamPathInfo(ctx, served)
	if errors.Is(err, upstream.ErrUnusable) {
		return nil, &notServedError{path: served, why: err}
	}
	if err != nil || info == nil {
		return nil, err
	}
	if err := s.checkClosure(ctx, served); err != nil {
		if problem := (*closureProblem)(nil); errors.As(err, &problem) {
			return nil, &notServedError{path: served, why: err}
		}
		return nil, err
	}
	return &source{served: served, from: served, info: info}, nil
}

// checkClosure walks the upstream closure of root (a mapped cross path or
// a content-addressed path) and reports the first path that makes it
// unservable. Success is memoised per root; a failure is not, because the
// missing piece may be built later (the walk is cheap: upstream path infos
// of valid paths are memoised).
func (s *Store) checkClosure(ctx context.Context, root string) error {
	if _, ok := s.closureOK.Load(root); ok {
		return nil
	}
	err := s.walkClosure(ctx, root, nil)
	if err == nil {
		s.closureOK.Store(root, struct{}{})
	}
	return err
}

// walkClosure checks every path of root's closure. Without found it stops
// at the first problem. With found it records the content-addressed paths
// in found and walks on past problems, so that one unservable path does not
// hide the content-addressed paths elsewhere in the closure; it still
// returns the first problem.
func (s *Store) walkClosure(ctx context.Context, root string, found map[string]bool) error {
	var problem error
	// A path the upstream has but that must not be used is a problem of
	// the closure, like a path it does not have, not a failure of the walk.
	var mu sync.Mutex
	unusable := make(map[string]error)
	query := func(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
		info, err := s.upstreamPathInfo(ctx, p)
		if errors.Is(err, upstream.ErrUnusable) {
			mu.Lock()
			unusable[p] = err
			mu.Unlock()
			return nil, nil
		}
		return info, err
	}
	err := upstream.WalkClosure(ctx, query, []string{root}, walkQueries, func(p string, info *pathinfo.PathInfo) error {
		if why := unusable[p]; why != nil {
			return closureBad(&problem, found, problemf("its closure holds a path that cannot be used: %v", why))
		}
		bad, err := s.checkClosurePath(ctx, root, p, info, found)
		if err != nil || bad == nil {
			return err
		}
		return closureBad(&problem, found, bad)
	})
	if err != nil {
		return err
	}
	return problem
}

// closureBad records a problem of a closure walk: the first one stops a
// walk without found; a walk with found goes on and reports the first.
func closureBad(problem *error, found map[string]bool, bad error) error {
	if found == nil {
		return bad
	}
	if *problem == nil {
		*problem = bad
	}
	return nil
}

// checkClosurePath says what makes p, a path in root's upstream closure,
// unservable (bad), or fails to find out (err). It records p in found if
// it is content-addressed.
func (s *Store) checkClosurePath(ctx context.Context, root, p string, info *pathinfo.PathInfo, found map[string]bool) (bad, err error) {
	switch e, mapped := s.cfg.Mapping.ByCross(p); {
	case info == nil:
		bad = problemf("its closure references %s, which is not valid in the upstream store", p)
	case mapped && s.tooLong[e.Native]:
		bad = problemf("its closure references %s, whose native path %s is longer than it", p, e.Native)
	case mapped:
	case info.CA != "":
		if found != nil {
			found[p] = true
		}
		for _, r := range info.References {
			if r == p {
				continue
			}
			ri, err := s.upstreamPathInfo(ctx, r)
			if errors.Is(err, upstream.ErrUnusable) {
				return problemf("its closure holds a path that cannot be used: %v", err), nil
			}
			if err != nil {
				return nil, err
			}
			if ri == nil || ri.CA == "" {
				bad = problemf("its closure holds the content-addressed path %s, which references the non-content-addressed path %s and so cannot be served unchanged", p, r)
				break
			}
		}
	case p == root:
		bad = problemf("%s is neither in the mapping nor content-addressed", p)
	default:
		bad = problemf("its closure references %s, which is input-addressed and not in the mapping", p)
	}
	return bad, nil
}

// walkQueries bounds the upstream path info queries a closure walk runs at
// once.
const walkQueries = 8

// isServedCA reports whether p is a content-addressed path in the closure
// of some mapped cross path. The index is filled by walking every mapped
// closure the first time a path outside it is asked for, and again (at
// most every caRewalkInterval) while some closure could not be walked
// completely.
func (s *Store) isServedCA(ctx context.Context, p string) (bool, error) {
	s.caMu.Lock()
	known, fresh := s.caIndex[p], s.caComplete || s.cfg.Now().Sub(s.caWalked) < caRewalkInterval
	s.caMu.Unlock()
	if known || fresh {
		return known, nil
	}
	// The walk runs without caMu, so lookups of indexed paths go on
	// meanwhile; concurrent callers share one walk.
	_, err := s.shared(ctx, &s.caFlight, "index of content-addressed paths", func(work context.Context) (any, error) {
		found := make(map[string]bool)
		complete := true
		for _, e := range s.cfg.Mapping.Entries() {
			// Problems in a closure only make that native path unservable;
			// the content-addressed paths found in it are still good.
			if err := s.walkClosure(work, e.Cross, found); err != nil {
				if problem := (*closureProblem)(nil); !errors.As(err, &problem) {
					return nil, err
				}
				complete = false
			}
		}
		s.caMu.Lock()
		for f := range found {
			s.caIndex[f] = true
		}
		s.caComplete = complete
		s.caWalked = s.cfg.Now()
		s.caMu.Unlock()
		return nil, nil
	})
	if err != nil {
		return false, err
	}
	s.caMu.Lock()
	defer s.caMu.Unlock()
	return s.caIndex[p], nil
}

// prepare makes sure served is in the cache and returns its entry and
// signed path info, or nil when this store does not serve it.
func (s *Store) prepare(ctx context.Context, served string) (*prepared, error) {
	if v, ok := s.prepared.Load(served); ok {
		return v.(*prepared), nil
	}
	v, err := s.shared(ctx, &s.prepFlight, served, func(work context.Context) (any, error) {
		if v, ok := s.prepared.Load(served); ok {
			return v, nil
		}
		src, err := s.resolve(work, served)
		if err != nil || src == nil {
			return (*prepared)(nil), err
		}
		s.readAhead(src)
		p, err := s.build(work, src)
		if errors.Is(err, upstream.ErrUnusable) {
			err = &notServedError{path: served, why: err}
		}
		if err != nil {
			// The upstream path may have been rebuilt with other bytes
			// (garbage-collected, then built again): ask again next time
			// rather than failing on remembered path info until a restart.
			s.upstreamInfo.Delete(src.from)
			s.closureOK.Delete(src.from)
			return nil, err
		}
		s.prepared.Store(served, p)
		return p, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*prepared), nil
}

// mappedReferences translates the upstream references of src into the
// references of the served path, in upstream order.
func (s *Store) mappedReferences(src *source) []string {
	refs := make([]string, len(src.info.References))
	for i, r := range src.info.References {
		refs[i] = r // content-addressed: same on both sides
		if e, ok := s.cfg.Mapping.ByCross(r); ok {
			refs[i] = e.Native
		}
	}
	return refs
}

// key identifies everything the cached bytes and metadata depend on.
func (s *Store) key(src *source, refs []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "decross-store cache key 1\n%s\n%s\nfrom %s %s %d\nderiver %s\n", s.cacheKey, src.served, src.from, src.info.NarHash, src.info.NarSize, src.entry.Deriver)
	for i, r := range src.info.References {
		fmt.Fprintf(h, "ref %s -> %s\n", r, refs[i])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) build(ctx context.Context, src *source) (*prepared, error) {
	// key pairs upstream references with their translations in upstream
	// order; path info lists them sorted.
	unsorted := s.mappedReferences(src)
	key := s.key(src, unsorted)
	refs := slices.Sorted(slices.Values(unsorted))
	entry, err := s.cfg.Cache.Lookup(src.served, key)
	if err != nil {
		return nil, err
	}
	if entry != nil {
		// The key covers these inputs, but the metadata file is signed as
		// read: a damaged one must not put wrong references under our
		// signature.
		if why := s.metadataMismatch(src, entry, refs); why != "" {
			s.log.Warn("cached metadata does not match, rebuilding", "path", src.served, "mismatch", why)
			entry = nil
		}
	}
	if entry != nil {
		if h := s.cfg.Hooks.CacheHit; h != nil {
			h()
		}
	} else {
		if h := s.cfg.Hooks.CacheMiss; h != nil {
			h()
		}
		start := time.Now()
		entry, err = s.rewriteInto(ctx, src, key, refs)
		if err != nil {
			return nil, err
		}
		took := time.Since(start)
		if h := s.cfg.Hooks.Rewrote; h != nil {
			h(src.info.NarSize, entry.NarSize, took)
		}
		s.log.Info("rewrote path", "path", src.served, "from", src.from, "narSize", entry.NarSize, "duration", took.Round(time.Millisecond))
	}
	info := entry.PathInfo()
	if src.isCA() {
		info.Sigs = append(info.Sigs, src.info.Sigs...)
	}
	if s.cfg.SigningKey != nil {
		sig, err := info.Sign(*s.cfg.SigningKey)
		if err != nil {
			return nil, err
		}
		info.Sigs = append(info.Sigs, sig)
	}
	return &prepared{entry: entry, info: info}, nil
}

// metadataMismatch says how a cached entry's metadata differs from what
// rewriteInto would record for src, "" when it does not.
func (s *Store) metadataMismatch(src *source, e *narcache.Entry, refs []string) string {
	deriver, ca := src.entry.Deriver, ""
	if src.isCA() {
		deriver, ca = src.info.Deriver, src.info.CA
	}
	switch {
	case !slices.Equal(e.References, refs):
		return fmt.Sprintf("references %v, want %v", e.References, refs)
	case e.Deriver != deriver:
		return fmt.Sprintf("deriver %q, want %q", e.Deriver, deriver)
	case e.CA != ca:
		return fmt.Sprintf("ca %q, want %q", e.CA, ca)
	case src.isCA() && (e.NarHash != src.info.NarHash || e.NarSize != src.info.NarSize):
		return "a content-addressed path's NAR differs from the upstream one"
	}
	return ""
}

// rewriteInto streams the upstream NAR of src through the rewriter into a
// new cache entry, checking the upstream hash on the way.
func (s *Store) rewriteInto(ctx context.Context, src *source, key string, refs []string) (*narcache.Entry, error) {
	// Bounded: each rewrite holds buffers, a compressor and an upstream
	// connection. The wait is not: this work is shared and detached, and
	// every waiting request leaves on its own deadline.
	select {
	case s.builds <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rewrite %s: %w", src.served, ctx.Err())
	}
	defer func() { <-s.builds }()
	stallAfter := s.cfg.UpstreamStallTimeout
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(stallAfter, func() {
		cancel(fmt.Errorf("upstream sent no NAR data for %v", stallAfter))
	})
	defer stall.Stop()

	start := time.Now()
	rc, err := s.cfg.Upstream.NarFromPath(ctx, src.from)
	if h := s.cfg.Hooks.Upstream; h != nil {
		h("NarFromPath", time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("read upstream NAR of %s: %w", src.from, err)
	}
	defer rc.Close()
	w, err := s.cfg.Cache.Create(src.served)
	if err != nil {
		return nil, err
	}
	defer w.Abort()

	// The upstream path info tells how long the NAR is; reading no further
	// keeps us from waiting on a connection that has nothing more to say.
	in := &hashingReader{r: io.LimitReader(rc, int64(src.info.NarSize)+1), h: asynchash.New(sha256.New()), progress: func() { stall.Reset(stallAfter) }}
	defer in.h.Close()
	// The NAR parser reads token by token; batch those reads.
	br := bufio.NewReaderSize(in, 64<<10)
	if err := s.rewriter.RewriteNAR(w, br); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		return nil, fmt.Errorf("rewrite %s (from %s): %w", src.served, src.from, err)
	}
	// Reading on to the reader's end lets it finish its own checks (a
	// binary cache's FileHash and FileSize).
	extra, err := io.Copy(io.Discard, br)
	if err != nil {
		return nil, fmt.Errorf("read upstream NAR of %s: %w", src.from, err)
	}
	if extra > 0 {
		return nil, fmt.Errorf("upstream NAR of %s: bytes after the end of the archive", src.from)
	}
	if in.h.Size() != src.info.NarSize {
		return nil, fmt.Errorf("upstream NAR of %s has %d bytes, its path info says %d", src.from, in.h.Size(), src.info.NarSize)
	}
	var got pathinfo.NarHash
	copy(got[:], in.h.Sum())
	if got != src.info.NarHash {
		return nil, fmt.Errorf("upstream NAR of %s does not match its narHash: got %s, want %s", src.from, got, src.info.NarHash)
	}
	if v, ok := rc.(upstream.Verifier); ok {
		v.Verified()
	}
	meta := narcache.Entry{
		Key:              key,
		References:       refs,
		Deriver:          src.entry.Deriver,
		RegistrationTime: s.cfg.Now().Unix(),
	}
	if src.isCA() {
		if w.Sum() != src.info.NarHash {
			return nil, fmt.Errorf("content-addressed path %s contains mapped cross paths; serving it changed would break its content address", src.served)
		}
		meta.CA = src.info.CA
		meta.Deriver = src.info.Deriver
	}
	return w.Commit(meta)
}

// hashingReader hashes what is read through it, off the critical path.
type hashingReader struct {
	r        io.Reader
	h        *asynchash.Hasher
	progress func()
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	if n > 0 {
		hr.h.Write(p[:n])
		hr.progress()
	}
	return n, err
}

// QueryPathInfo returns the signed path info of a served path, nil when
// the path is not served.
func (s *Store) QueryPathInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	prep, err := s.prepare(ctx, p)
	if err != nil || prep == nil {
		return nil, err
	}
	return prep.info.Clone(), nil
}

// QueryPathFromHashPart finds a served path by its hash part.
func (s *Store) QueryPathFromHashPart(ctx context.Context, h string) (string, error) {
	if p, ok := s.byHash[h]; ok {
		return p, nil
	}
	if _, err := s.isServedCA(ctx, ""); err != nil {
		return "", err
	}
	s.caMu.Lock()
	defer s.caMu.Unlock()
	for p := range s.caIndex {
		if hashPart(p) == h {
			return p, nil
		}
	}
	return "", nil
}

// Prefetch prepares a served path in the cache, rewriting it unless it is
// cached already, and returns the size of its NAR. A path this store does
// not serve is an error saying why.
func (s *Store) Prefetch(ctx context.Context, p string) (narSize uint64, err error) {
	prep, err := s.prepare(ctx, p)
	if err != nil {
		return 0, err
	}
	if prep == nil {
		return 0, &notServedError{path: p, why: errors.New("it is neither mapped nor a content-addressed path in a mapped closure")}
	}
	return prep.entry.NarSize, nil
}

// NarFromPath returns the rewritten NAR of a served path, verified against
// its path info before any byte is returned.
func (s *Store) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	return s.openCached(ctx, p, func(e *narcache.Entry) (io.ReadCloser, error) { return s.cfg.Cache.Open(e) })
}

// NarFile returns a served path's NAR as the cache stores it (see
// narcache.Cache.OpenStored): the zstd-compressed file itself once the
// entry is compacted, the plain NAR before. Its NarHash is that of the
// path info QueryPathInfo returns for the same entry. As with NarFromPath,
// the path is prepared and its cached NAR checked before anything is
// returned, and an entry found damaged or evicted is rebuilt.
func (s *Store) NarFile(ctx context.Context, p string) (*narcache.Stored, error) {
	var st *narcache.Stored
	rc, err := s.openCached(ctx, p, func(e *narcache.Entry) (io.ReadCloser, error) {
		var err error
		st, err = s.cfg.Cache.OpenStored(e)
		if err != nil {
			return nil, err
		}
		return st.ReadCloser, nil
	})
	if err != nil {
		return nil, err
	}
	st.ReadCloser = rc
	return st, nil
}

// openCached prepares p and opens its cache entry with open, rebuilding
// the entry once if it turns out damaged or evicted.
func (s *Store) openCached(ctx context.Context, p string, open func(*narcache.Entry) (io.ReadCloser, error)) (io.ReadCloser, error) {
	for attempt := 0; ; attempt++ {
		prep, err := s.prepare(ctx, p)
		if err != nil {
			return nil, err
		}
		if prep == nil {
			return nil, &notServedError{path: p, why: errors.New("it is neither mapped nor a content-addressed path in a mapped closure")}
		}
		rc, err := open(prep.entry)
		if err == nil {
			return &forgetOnDamage{ReadCloser: rc, forget: func() { s.prepared.Delete(p) }}, nil
		}
		if !errors.Is(err, narcache.ErrDamaged) || attempt > 0 {
			return nil, err
		}
		if errors.Is(err, narcache.ErrEvicted) {
			s.log.Debug("cache entry evicted since it was prepared, rebuilding", "path", p)
		} else {
			s.log.Warn("cache entry damaged, rebuilding", "path", p, "error", err)
		}
		s.prepared.Delete(p)
	}
}

// forgetOnDamage drops the in-memory entry of a path whose cached NAR
// turned out damaged while it was read (the cache has removed the files),
// so the next request rebuilds it.
type forgetOnDamage struct {
	io.ReadCloser
	forget func()
}

func (f *forgetOnDamage) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err != nil && errors.Is(err, narcache.ErrDamaged) {
		f.forget()
	}
	return n, err
}

// ValidPaths lists every path this store serves: the mapped native paths
// whose closures are servable, and the content-addressed paths in them.
func (s *Store) ValidPaths(ctx context.Context) ([]string, error) {
	if _, err := s.isServedCA(ctx, ""); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range s.cfg.Mapping.Entries() {
		_, err := s.resolve(ctx, e.Native)
		switch {
		case err == nil:
			out = append(out, e.Native)
		case !errors.Is(err, ErrNotServed):
			return nil, fmt.Errorf("list valid paths: %w", err) // the upstream failed: no partial list
		}
	}
	s.caMu.Lock()
	for p := range s.caIndex {
		out = append(out, p)
	}
	s.caMu.Unlock()
	sort.Strings(out)
	return out, nil
}

// Problems lists, for every mapped path, why it cannot be served (an empty
// map when everything can). It reads metadata only; no NAR is rewritten.
func (s *Store) Problems(ctx context.Context) map[string]error {
	out := make(map[string]error)
	for _, e := range s.cfg.Mapping.Entries() {
		if _, err := s.resolve(ctx, e.Native); err != nil {
			out[e.Native] = err
		}
	}
	return out
}

// MappedPaths is the number of native paths in the mapping.
func (s *Store) MappedPaths() int { return s.cfg.Mapping.Len() }

// PublicKey is the public half of the signing key, as clients put it in
// trusted-public-keys; "" for a store without one.
func (s *Store) PublicKey() string {
	if s.cfg.SigningKey == nil {
		return ""
	}
	return s.cfg.SigningKey.ToPublicKey().String()
}
