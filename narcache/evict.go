package narcache

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rescanInterval bounds how stale this process's view of the directory
// may be when it decides what to evict: other processes sharing the
// directory add entries and refresh recency too.
const rescanInterval = 10 * time.Second

// touchInterval is how often serving an entry refreshes its metadata's
// mtime, the recency every process sharing the directory sees: at most
// one metadata write per entry per interval, whatever the request rate.
const touchInterval = time.Minute

// sizeIndex is this process's view of the entries on disk: what the last
// scan of the directory found, kept up to date with what this process
// commits, compacts and removes.
type sizeIndex struct {
	mu       sync.Mutex
	entries  map[string]*indexed  // by hash part
	touched  map[string]time.Time // by hash part: last mtime refresh by this process
	bytes    int64
	scanned  time.Time // zero: never
	scanning bool      // a background scan is running

	evicting sync.Mutex // one eviction pass at a time
}

type indexed struct {
	bytes int64     // every file of the entry: metadata, plain and compressed NAR
	used  time.Time // last commit or serve, as far as this process knows
}

// counters are the cumulative figures of Stats.
type counters struct {
	hits, misses, evictions, damaged atomic.Uint64
}

// Stats is a snapshot of a cache's figures.
type Stats struct {
	// Entries and Bytes are the entries on disk and the bytes their files
	// hold (apparent size), as of this process's last scan of the
	// directory plus what it has written and removed since. A scan runs
	// when the cache first needs one (eviction, or the first Stats call),
	// then at most every 10 s while evicting or being asked for Stats.
	Entries int
	Bytes   int64
	// MaxBytes is the bound (0: unbounded).
	MaxBytes int64
	// Hits and Misses count lookups that found a usable entry and those
	// that did not.
	Hits, Misses uint64
	// Evictions counts entries this process evicted; Damaged those it
	// removed because their NAR did not match their metadata.
	Evictions, Damaged uint64
}

// Stats returns the cache's figures without scanning the directory: a
// scan it needs runs in the background, and later calls see its result.
func (c *Cache) Stats() Stats {
	ix := &c.sizes
	ix.mu.Lock()
	st := Stats{Entries: len(ix.entries), Bytes: ix.bytes, MaxBytes: c.maxSize}
	stale := !ix.scanning && time.Since(ix.scanned) > rescanInterval
	if stale {
		ix.scanning = true
	}
	ix.mu.Unlock()
	if stale {
		c.background(func() {
			c.scan()
			ix.mu.Lock()
			ix.scanning = false
			ix.mu.Unlock()
		})
	}
	st.Hits = c.stats.hits.Load()
	st.Misses = c.stats.misses.Load()
	st.Evictions = c.stats.evictions.Load()
	st.Damaged = c.stats.damaged.Load()
	return st
}

// background runs f on a goroutine Close waits for, unless the cache is
// closed.
func (c *Cache) background(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return
	default:
	}
	c.worker.Add(1)
	go func() {
		defer c.worker.Done()
		f()
	}()
}

// entryName splits a file name of the directory into the hash part of an
// entry, false for anything else (temporary files above all: an entry
// being written is never an eviction candidate).
func entryName(name string) (string, bool) {
	if len(name) < 33 || name[32] != '.' || strings.HasPrefix(name, ".") {
		return "", false
	}
	switch name[32:] {
	case ".json", ".nar", ".nar.zst":
		return name[:32], true
	}
	return "", false
}

// scan rebuilds the index from the directory. An entry's recency is its
// metadata's mtime (or its NAR's, for a NAR without metadata), or what
// this process knows if that is later.
func (c *Cache) scan() {
	dirents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	found := make(map[string]*indexed)
	hasMeta := make(map[string]bool)
	var total int64
	for _, de := range dirents {
		hp, ok := entryName(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		e := found[hp]
		if e == nil {
			e = &indexed{}
			found[hp] = e
		}
		e.bytes += fi.Size()
		total += fi.Size()
		isMeta := strings.HasSuffix(de.Name(), ".json")
		if isMeta || (!hasMeta[hp] && fi.ModTime().After(e.used)) {
			e.used = fi.ModTime()
		}
		hasMeta[hp] = hasMeta[hp] || isMeta
	}
	ix := &c.sizes
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for hp, e := range found {
		if old := ix.entries[hp]; old != nil && old.used.After(e.used) {
			e.used = old.used
		}
	}
	ix.entries, ix.bytes, ix.scanned = found, total, time.Now()
}

// added records a committed entry of size bytes, replacing any earlier one.
func (c *Cache) added(hashPart string, size int64) {
	ix := &c.sizes
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old := ix.entries[hashPart]; old != nil {
		ix.bytes -= old.bytes
	}
	ix.entries[hashPart] = &indexed{bytes: size, used: time.Now()}
	ix.bytes += size
}

// resized records that an entry's files now take delta bytes more.
func (c *Cache) resized(hashPart string, delta int64) {
	ix := &c.sizes
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e := ix.entries[hashPart]; e != nil {
		e.bytes += delta
		ix.bytes += delta
	}
}

// removed records that an entry's files are gone.
func (c *Cache) removed(hashPart string) {
	ix := &c.sizes
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e := ix.entries[hashPart]; e != nil {
		ix.bytes -= e.bytes
		delete(ix.entries, hashPart)
	}
	delete(ix.touched, hashPart)
}

// touch records that an entry is being served, and tells processes
// sharing the directory by refreshing its metadata's mtime (at most every
// touchInterval).
func (c *Cache) touch(hashPart, metaFile string) {
	now := time.Now()
	ix := &c.sizes
	ix.mu.Lock()
	if e := ix.entries[hashPart]; e != nil && now.After(e.used) {
		e.used = now
	}
	due := now.Sub(ix.touched[hashPart]) >= touchInterval
	if due {
		ix.touched[hashPart] = now
	}
	ix.mu.Unlock()
	if due {
		// Best effort: another user's file in a shared directory keeps its
		// time, and is evicted a little early.
		_ = os.Chtimes(metaFile, now, now)
	}
}

// evict removes the least recently served entries until the cache is
// within its bound again, skipping keep (the entry just committed, about
// to be served) and every entry some process is reading or writing.
func (c *Cache) evict(keep string) {
	if c.maxSize <= 0 {
		return
	}
	ix := &c.sizes
	ix.evicting.Lock()
	defer ix.evicting.Unlock()
	ix.mu.Lock()
	stale := time.Since(ix.scanned) > rescanInterval
	ix.mu.Unlock()
	if stale {
		c.scan()
	}
	ix.mu.Lock()
	if ix.bytes <= c.maxSize {
		ix.mu.Unlock()
		return
	}
	type candidate struct {
		hashPart string
		used     time.Time
	}
	var cands []candidate
	for hp, e := range ix.entries {
		if hp != keep {
			cands = append(cands, candidate{hp, e.used})
		}
	}
	ix.mu.Unlock()
	slices.SortFunc(cands, func(a, b candidate) int { return a.used.Compare(b.used) })
	for _, cand := range cands {
		ix.mu.Lock()
		over := ix.bytes > c.maxSize
		ix.mu.Unlock()
		if !over {
			return
		}
		if c.evictEntry(cand.hashPart) {
			c.stats.evictions.Add(1)
			c.removed(cand.hashPart)
		}
	}
}

// evictEntry removes an entry unless a process has one of its NAR files
// open (readers and writers hold a shared lock on it) or it changed
// meanwhile, and tells whether it did.
func (c *Cache) evictEntry(hashPart string) bool {
	files := c.filesOf(hashPart)
	var locked []*os.File
	defer func() {
		for _, f := range locked {
			f.Close()
		}
	}()
	for _, name := range []string{files.zst, files.plain} {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false
		}
		locked = append(locked, f)
		if !tryLockExclusive(f) {
			return false // being read or written
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A commit (of any process) may have put new files under these names
	// since they were locked: those are not ours to remove.
	for _, name := range []string{files.zst, files.plain} {
		fi, err := os.Stat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil || !slices.ContainsFunc(locked, func(f *os.File) bool {
			lfi, err := f.Stat()
			return err == nil && os.SameFile(fi, lfi)
		}) {
			return false
		}
	}
	// Metadata first: a reader that finds no metadata misses; a crash
	// between the removals leaves a NAR without metadata, which a scan
	// counts and a later eviction or rebuild removes.
	names := []string{files.meta}
	for _, f := range locked {
		names = append(names, f.Name())
	}
	delete(c.verified, files.plain)
	delete(c.verified, files.zst)
	return removeFiles(names...) == nil
}

// lockShared takes a shared lock on f, held until f is closed: evictions
// (which need it exclusively) leave the file alone.
func lockShared(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
		if err != syscall.EINTR {
			return err
		}
	}
}

// tryLockExclusive takes an exclusive lock on f if nobody holds a lock on
// it.
func tryLockExclusive(f *os.File) bool {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err == nil
		}
	}
}

// linked tells whether f still has a name in the file system.
func linked(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || st.Nlink > 0
}
