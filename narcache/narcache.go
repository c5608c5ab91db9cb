package narcache

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/storepath"
	"golang.org/x/sync/singleflight"

	"github.com/decross-store/decross-store/internal/asynchash"
	"github.com/decross-store/decross-store/pathinfo"
)

// formatVersion changes whenever the on-disk layout changes; entries of
// another version are ignored and rebuilt.
const formatVersion = 1

// maxMetadataSize bounds the metadata file we are willing to parse.
const maxMetadataSize = 16 << 20

// ErrDamaged reports an entry whose NAR does not match its metadata.
var ErrDamaged = errors.New("cache entry damaged")

// ErrEvicted reports an entry removed (evicted, or replaced by a rebuild)
// since it was looked up. errors.Is(ErrEvicted, ErrDamaged) holds: either
// way the caller looks the path up again and rebuilds it, but nothing was
// damaged.
var ErrEvicted error = evictedError{}

type evictedError struct{}

func (evictedError) Error() string        { return "cache entry evicted or replaced since it was looked up" }
func (evictedError) Is(target error) bool { return target == ErrDamaged }

// Entry is the metadata of one cached NAR.
type Entry struct {
	Version          int              `json:"version"`
	Key              string           `json:"key"`
	Path             string           `json:"path"`
	NarHash          pathinfo.NarHash `json:"-"`
	NarHashString    string           `json:"narHash"`
	NarSize          uint64           `json:"narSize"`
	References       []string         `json:"references"`
	Deriver          string           `json:"deriver,omitempty"`
	CA               string           `json:"ca,omitempty"`
	RegistrationTime int64            `json:"registrationTime"`
}

// PathInfo returns the entry as unsigned path info.
func (e *Entry) PathInfo() *pathinfo.PathInfo {
	return &pathinfo.PathInfo{
		Path:             e.Path,
		Deriver:          e.Deriver,
		NarHash:          e.NarHash,
		NarSize:          e.NarSize,
		References:       append([]string(nil), e.References...),
		RegistrationTime: e.RegistrationTime,
		CA:               e.CA,
	}
}

// Cache is a directory of entries. It is safe for concurrent use; callers
// must not write the same path concurrently (the store serialises that).
// Several processes may share one directory (serve --stdio runs one per
// session): what they must agree on goes through the file system (file
// locks, metadata mtimes), not through memory.
type Cache struct {
	dir     string
	maxSize int64 // bytes; 0: unbounded

	// decoders holds zstd decoders between reads: a new one allocates
	// about a megabyte, which for a closure of small paths costs more
	// than decoding them.
	decoders sync.Pool

	// mu guards the maps and activity fields, and every rename or removal
	// of an entry's files, so that a commit, a compaction, an eviction and a
	// removal of one path never interleave in this process.
	mu        sync.Mutex
	verified  map[string]verifiedFile // by NAR file name: what was last verified
	queued    map[string]bool         // by store path: waiting for compaction
	verifying singleflight.Group

	// NARs of this cache being read or written now, when that count last
	// fell to zero, and a channel closed (and replaced) whenever it changes:
	// the compactor waits on it.
	busy     int
	lastBusy time.Time
	activity chan struct{}

	compactDelay time.Duration // quiet time of the whole cache before compacting
	chunkDone    func()        // tests: called after each chunk a compaction writes
	compactQ     chan *Entry
	startOnce    sync.Once
	closeOnce    sync.Once
	closed       chan struct{}
	worker       sync.WaitGroup

	sizes sizeIndex
	stats counters
}

// Option configures a Cache.
type Option func(*Cache)

// WithMaxSize bounds the cache to about bytes (0: unbounded): once the
// entries take more, the least recently served ones are evicted.
func WithMaxSize(bytes int64) Option {
	return func(c *Cache) { c.maxSize = max(bytes, 0) }
}

const defaultCompactDelay = 2 * time.Second

type fileID struct {
	ino   uint64
	size  int64
	mtime time.Time
}

// verifiedFile is a NAR file found to hold the NAR with hash and size:
// valid only while the file keeps its identity, and only for an entry with
// that hash and size.
type verifiedFile struct {
	id   fileID
	hash pathinfo.NarHash
	size uint64
}

// staleTempAge is how old a temporary file must be before Open takes it
// for the leftover of a process that died while writing it: far longer
// than any write, which fails after a couple of minutes without upstream
// data.
const staleTempAge = time.Hour

// Open opens (creating if needed) the cache directory, and removes the
// temporary files that processes killed while writing left behind.
func Open(dir string, opts ...Option) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	// Best effort: a leftover this user may not remove (another user's, in
	// a shared directory) must not make the cache unusable.
	removeStaleTemps(dir, time.Now().Add(-staleTempAge))
	c := &Cache{
		dir:          dir,
		verified:     make(map[string]verifiedFile),
		queued:       make(map[string]bool),
		activity:     make(chan struct{}),
		compactDelay: defaultCompactDelay,
		compactQ:     make(chan *Entry, 1024),
		closed:       make(chan struct{}),
		sizes:        sizeIndex{entries: make(map[string]*indexed), touched: make(map[string]time.Time)},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// removeStaleTemps removes temporary files last written before cutoff.
// Younger ones may belong to another process sharing the directory (serve
// --stdio runs one per session) and are left alone, as are those that
// cannot be removed.
func removeStaleTemps(dir string, cutoff time.Time) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, name := range tmps {
		fi, err := os.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
			continue
		}
		_ = os.Remove(name)
	}
}

// Close stops background work (compaction, a directory scan), waiting for
// it: a compaction in progress is abandoned and its temporary file
// removed. Entries left plain are compacted when a later process opens
// them.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closeOnce.Do(func() { close(c.closed) })
	c.mu.Unlock()
	c.worker.Wait()
	return nil
}

type entryFiles struct {
	plain, zst, meta string
}

func (c *Cache) files(path string) (entryFiles, error) {
	if sp, err := storepath.FromAbsolutePath(path); err != nil || sp.Absolute() != path {
		return entryFiles{}, fmt.Errorf("cache file name for %q: not a plain store path (%v)", path, err)
	}
	return c.filesOf(path[len(storepath.StoreDir)+1:][:32]), nil
}

func (c *Cache) filesOf(hashPart string) entryFiles {
	base := filepath.Join(c.dir, hashPart)
	return entryFiles{plain: base + ".nar", zst: base + ".nar.zst", meta: base + ".json"}
}

// Lookup returns the entry for path if it exists with the given key and
// its NAR is there. A missing, foreign-keyed or unreadable entry, and one
// whose NAR is missing or plainly cut short, is a miss (nil, nil): the
// caller rebuilds it, which replaces whatever is left. Only I/O errors
// other than "not found" are returned.
func (c *Cache) Lookup(path, key string) (*Entry, error) {
	e, err := c.readEntry(path)
	if err != nil {
		return nil, err
	}
	if e == nil || e.Key != key || !c.narPresent(e) {
		c.stats.misses.Add(1)
		return nil, nil
	}
	c.stats.hits.Add(1)
	return e, nil
}

// narPresent tells whether e has a NAR file that may hold its NAR: a
// non-empty compressed one, or a plain one of the right length. This
// catches what a power loss typically leaves of a file renamed before its
// data reached the disk (nothing, or a zero-length or short file) without
// reading it; Open's hash check catches the rest.
func (c *Cache) narPresent(e *Entry) bool {
	files, err := c.files(e.Path)
	if err != nil {
		return false
	}
	if fi, err := os.Stat(files.zst); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		return true
	}
	fi, err := os.Stat(files.plain)
	return err == nil && fi.Mode().IsRegular() && uint64(fi.Size()) == e.NarSize
}

// readEntry reads the metadata of path's entry, nil when there is none of
// this format (missing, unparseable or foreign metadata is a miss, not a
// reason to fail a request).
func (c *Cache) readEntry(path string) (*Entry, error) {
	files, err := c.files(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(files.meta)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache lookup %s: %w", path, err)
	}
	defer f.Close()
	var e Entry
	if err := json.NewDecoder(io.LimitReader(f, maxMetadataSize)).Decode(&e); err != nil {
		return nil, nil
	}
	if e.Version != formatVersion || e.Path != path {
		return nil, nil
	}
	h, err := pathinfo.ParseNarHash(e.NarHashString)
	if err != nil {
		return nil, nil
	}
	e.NarHash = h
	return &e, nil
}

// current tells whether e is still the entry its metadata file describes.
func (c *Cache) current(e *Entry) bool {
	now, err := c.readEntry(e.Path)
	return err == nil && now != nil && now.Key == e.Key && now.NarHash == e.NarHash && now.NarSize == e.NarSize
}

// beginIO and endIO bracket every read and write of a NAR of the cache,
// so that compaction keeps off the disk while they run.
func (c *Cache) beginIO() {
	c.mu.Lock()
	c.busy++
	c.signalLocked()
	c.mu.Unlock()
}

func (c *Cache) endIO() {
	c.mu.Lock()
	c.busy--
	if c.busy == 0 {
		c.lastBusy = time.Now()
	}
	c.signalLocked()
	c.mu.Unlock()
}

func (c *Cache) signalLocked() {
	close(c.activity)
	c.activity = make(chan struct{})
}

// Writer receives one NAR for the cache. Commit makes it visible; Abort
// (safe after Commit) discards it.
type Writer struct {
	cache *Cache
	path  string
	tmp   *os.File
	hash  *asynchash.Hasher
	done  bool
	files entryFiles
}

// Create starts a new entry for path. The NAR is written plain; it is
// compressed later, off the request's path.
func (c *Cache) Create(path string) (*Writer, error) {
	files, err := c.files(path)
	if err != nil {
		return nil, err
	}
	// A temporary file is never an entry: eviction does not see it.
	tmp, err := os.CreateTemp(c.dir, ".tmp-*.nar")
	if err != nil {
		return nil, fmt.Errorf("cache create %s: %w", path, err)
	}
	c.beginIO()
	return &Writer{cache: c, path: path, tmp: tmp, hash: asynchash.New(sha256.New()), files: files}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	w.hash.Write(p)
	return w.tmp.Write(p)
}

// Size and Sum report what has been written so far.
func (w *Writer) Size() uint64 { return w.hash.Size() }

// Sum returns the SHA-256 of the bytes written so far.
func (w *Writer) Sum() pathinfo.NarHash {
	var h pathinfo.NarHash
	copy(h[:], w.hash.Sum())
	return h
}

// Commit finishes the entry. meta supplies everything except NarHash and
// NarSize, which come from the bytes written; Version and Path are set here.
//
// Nothing is fsynced. A crash of the process loses nothing written; what a
// power loss (or kernel crash) can leave of recent entries is caught before
// anything is served, since every process that comes up afterwards checks
// an entry before serving it:
//   - metadata missing, empty or cut short: it does not parse, a miss;
//   - metadata without a NAR, an empty NAR, or a plain one of the wrong
//     length: Lookup misses;
//   - a NAR of the right length with other bytes (zeros where the data
//     never reached the disk, the previous entry's NAR beside new
//     metadata): Open hashes it against the metadata, finds it damaged,
//     removes the entry;
//   - a compressed NAR cut short: the same, or zstd fails;
//   - a NAR without metadata: a miss, replaced by the rebuild.
//
// Metadata that parses is trusted only as far as it is checked: its path
// and key must match, and its hash and size are checked against the NAR.
// So an fsync would only keep entries across a power loss, which costs a
// rebuild at worst, and it would cost every cold request a flush of its
// whole NAR.
func (w *Writer) Commit(meta Entry) (*Entry, error) {
	if w.done {
		return nil, fmt.Errorf("cache commit %s: writer already finished", w.path)
	}
	w.done = true
	c := w.cache
	defer c.endIO()
	sum := w.Sum() // also ends the hashing goroutine on every path below
	fail := func(err error) (*Entry, error) {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		return nil, fmt.Errorf("cache commit %s: %w", w.path, err)
	}
	meta.Version = formatVersion
	meta.Path = w.path
	meta.NarHash = sum
	meta.NarHashString = meta.NarHash.String()
	meta.NarSize = w.hash.Size()
	if meta.References == nil {
		meta.References = []string{}
	}
	js, err := json.MarshalIndent(&meta, "", "  ")
	if err != nil {
		return fail(err)
	}
	js = append(js, '\n')
	// Held until the metadata is written: an evictor (of any process)
	// cannot take the NAR between its rename and its metadata.
	if err := lockShared(w.tmp); err != nil {
		return fail(err)
	}
	c.mu.Lock()
	// Nothing of a previous entry may survive next to the new NAR, even
	// for a moment: its metadata and compressed NAR go first.
	err = removeFiles(w.files.meta, w.files.zst)
	if err == nil {
		err = os.Rename(w.tmp.Name(), w.files.plain)
	}
	if err == nil {
		delete(c.verified, w.files.zst)
		// Freshly written from the bytes we hashed: no need to re-verify.
		if fi, statErr := w.tmp.Stat(); statErr == nil {
			c.verified[w.files.plain] = verifiedFile{id: identityOf(fi), hash: sum, size: meta.NarSize}
		}
	}
	c.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	err = writeFileAtomic(w.files.meta, js)
	if cerr := w.tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cache commit %s: %w", w.path, err)
	}
	hashPart := filepath.Base(w.files.meta)[:32]
	c.added(hashPart, int64(meta.NarSize)+int64(len(js)))
	c.evict(hashPart)
	c.scheduleCompaction(&meta)
	return &meta, nil
}

// Abort discards an uncommitted entry.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.hash.Close()
	w.tmp.Close()
	os.Remove(w.tmp.Name())
	w.cache.endIO()
}

// writeFileAtomic writes name through a temporary file and a rename, so
// that no process sees it half-written. Without an fsync (see Commit).
func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*.json")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), name)
}

func identity(name string) (fileID, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileID{}, err
	}
	return identityOf(fi), nil
}

func identityOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

// Remove deletes the entry for path.
func (c *Cache) Remove(path string) error {
	files, err := c.files(path)
	if err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.verified, files.plain)
	delete(c.verified, files.zst)
	err = removeFiles(files.meta, files.zst, files.plain)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cache remove %s: %w", path, err)
	}
	c.removed(filepath.Base(files.meta)[:32])
	return nil
}

func removeFiles(names ...string) error {
	for _, f := range names {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Open returns a reader of e's NAR. Unless this process has already
// verified the same file (same inode, size and mtime), the whole NAR is
// first checked against e's SHA-256; on a mismatch the entry is removed and
// the error wraps ErrDamaged.
//
// An entry evicted or replaced (by this process or another) since e was
// looked up is not damaged: nothing is removed, and the error wraps
// ErrEvicted (which wraps ErrDamaged, so that a caller rebuilding damaged
// entries rebuilds this one too).
//
// Damage after that check (bit rot, a truncated file) is caught while the
// NAR streams by zstd's frame checksum and by the length: the reader's last
// Read then fails with ErrDamaged instead of io.EOF and the entry is
// removed, so the client sees a broken transfer and the next request
// rebuilds. Not re-hashing with SHA-256 on every read keeps the warm path
// as fast as the network; a file replaced on purpose by a valid zstd stream
// of the same length would need write access to the cache, which could as
// well rewrite the metadata.
//
// The reader holds a shared lock on the NAR file until it is closed, so
// that no process evicts the entry under it.
func (c *Cache) Open(e *Entry) (io.ReadCloser, error) {
	files, err := c.files(e.Path)
	if err != nil {
		return nil, err
	}
	c.beginIO()
	r, _, err := c.open(e, files, false)
	if err != nil {
		c.endIO()
		return nil, fmt.Errorf("cache open %s: %w", e.Path, err)
	}
	c.touch(filepath.Base(files.meta)[:32], files.meta)
	return r, nil
}

// Stored is an entry's NAR file as the cache holds it, for a caller that
// sends the stored bytes on unchanged (an HTTP binary cache serving the
// zstd file as it is, with no compression per request).
type Stored struct {
	io.ReadCloser
	// Compressed: the bytes are the NAR compressed with zstd, as
	// compaction writes it (a single frame, with a checksum); otherwise
	// they are the plain NAR.
	Compressed bool
	Size       int64            // length of the bytes, what Content-Length would say
	NarHash    pathinfo.NarHash // of the NAR, compressed or not: the entry's
	NarSize    uint64
}

// OpenStored is Open, but returns the NAR file's bytes as stored: the
// compressed file itself once the entry is compacted, the plain NAR
// before. The same rules hold: the whole NAR is checked against e once per
// process and file, the reader holds the shared lock that keeps eviction
// off, an entry evicted or replaced since it was looked up is ErrEvicted,
// and a damaged one is removed (ErrDamaged). While the bytes stream only
// their length is checked (for a compressed file, against the file's size):
// the compressed bytes are not decompressed again, so bit rot after the
// check reaches the client, which checks the NAR hash itself, and the next
// process to open the entry finds it damaged.
func (c *Cache) OpenStored(e *Entry) (*Stored, error) {
	files, err := c.files(e.Path)
	if err != nil {
		return nil, err
	}
	c.beginIO()
	r, compressed, err := c.open(e, files, true)
	if err != nil {
		c.endIO()
		return nil, fmt.Errorf("cache open %s: %w", e.Path, err)
	}
	c.touch(filepath.Base(files.meta)[:32], files.meta)
	return &Stored{ReadCloser: r, Compressed: compressed, Size: int64(r.size), NarHash: e.NarHash, NarSize: e.NarSize}, nil
}

// open opens e's NAR file; with raw, a compressed one is returned as
// stored instead of decompressed.
func (c *Cache) open(e *Entry, files entryFiles, raw bool) (*checkedReader, bool, error) {
	f, name, compressed, err := openNAR(files)
	if errors.Is(err, fs.ErrNotExist) {
		if !c.current(e) {
			return nil, false, ErrEvicted
		}
		err = fmt.Errorf("NAR file missing: %w", ErrDamaged)
		if rmErr := c.removeDamaged(e, name, fileID{}); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return nil, false, err
	}
	if err != nil {
		return nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	id := identityOf(fi)
	damaged := func(err error) (*checkedReader, bool, error) {
		f.Close()
		if !c.current(e) {
			return nil, false, ErrEvicted // rebuilt by another process meanwhile
		}
		if rmErr := c.removeDamaged(e, name, id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return nil, false, err
	}
	if err := c.verifyOnce(name, compressed, e, id); err != nil {
		return damaged(err)
	}
	var body io.ReadCloser = f
	size := e.NarSize
	switch {
	case compressed && raw:
		size = uint64(id.size)
	case compressed:
		if body, err = c.newZstdFile(f); err != nil {
			return damaged(err)
		}
	default:
		// Left plain by an earlier process, or not compacted yet.
		c.scheduleCompaction(e)
	}
	return &checkedReader{body: body, entry: e, size: size, cache: c, name: name, id: id}, compressed, nil
}

// openNAR opens the NAR file of an entry, compressed or plain, and takes a
// shared lock on it. A file unlinked before the lock was granted (evicted,
// compacted or replaced) is not one to read: look again. Compaction may
// rename the plain NAR away between two opens, so the compressed one is
// looked for again before calling the NAR missing.
func openNAR(files entryFiles) (f *os.File, name string, compressed bool, err error) {
	for range 3 {
		name, compressed = files.zst, true
		f, err = os.Open(name)
		for _, next := range []string{files.plain, files.zst} {
			if !errors.Is(err, fs.ErrNotExist) {
				break
			}
			name, compressed = next, next == files.zst
			f, err = os.Open(name)
		}
		if err != nil {
			return nil, name, compressed, err
		}
		if err := lockShared(f); err != nil {
			f.Close()
			return nil, name, compressed, err
		}
		if linked(f) {
			return f, name, compressed, nil
		}
		f.Close()
	}
	return nil, name, compressed, fs.ErrNotExist
}

// verifyOnce checks the NAR file with identity id against e, unless that
// was done before; concurrent requests for the same file share one check.
func (c *Cache) verifyOnce(narFile string, compressed bool, e *Entry, id fileID) error {
	want := verifiedFile{id: id, hash: e.NarHash, size: e.NarSize}
	c.mu.Lock()
	known, ok := c.verified[narFile]
	c.mu.Unlock()
	if ok && known == want {
		return nil
	}
	key := fmt.Sprintf("%s\x00%d\x00%d\x00%d\x00%s\x00%d", narFile, id.ino, id.size, id.mtime.UnixNano(), e.NarHash, e.NarSize)
	_, err, _ := c.verifying.Do(key, func() (any, error) {
		f, err := os.Open(narFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if identityOf(fi) != id {
			return nil, fmt.Errorf("%w: NAR file replaced while being opened", ErrDamaged)
		}
		var body io.Reader = f
		if compressed {
			zr, err := c.newZstdFile(f)
			if err != nil {
				return nil, err
			}
			defer zr.release()
			body = zr
		}
		if err := verify(body, e); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.verified[narFile] = want
		c.mu.Unlock()
		return nil, nil
	})
	return err
}

// removeDamaged removes the entry of e if its NAR file name is still the
// damaged one (identity id), or is missing: a reader of an old file must
// not delete an entry rebuilt or compacted meanwhile.
func (c *Cache) removeDamaged(e *Entry, name string, id fileID) error {
	current, err := identity(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		files, ferr := c.files(e.Path)
		if ferr != nil {
			return ferr
		}
		// Gone because it was compacted or rebuilt, not because it is lost.
		for _, other := range []string{files.zst, files.plain} {
			if _, err := os.Stat(other); err == nil && other != name {
				return nil
			}
		}
	case err != nil:
		return fmt.Errorf("cache remove %s: %w", e.Path, err)
	case current != id:
		return nil // already rebuilt
	}
	c.stats.damaged.Add(1)
	return c.Remove(e.Path)
}

func verify(body io.Reader, e *Entry) error {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(body, int64(e.NarSize)+1))
	if err != nil {
		return err
	}
	var got pathinfo.NarHash
	copy(got[:], h.Sum(nil))
	if uint64(n) != e.NarSize || got != e.NarHash {
		return fmt.Errorf("%w: NAR has %d bytes and hash %s, metadata says %d bytes and %s", ErrDamaged, n, got, e.NarSize, e.NarHash)
	}
	return nil
}

// checkedReader streams a cached NAR and fails its final Read when the
// stream is damaged or not as long as the entry says.
type checkedReader struct {
	body   io.ReadCloser
	entry  *Entry
	size   uint64 // of the stream: the NAR's, or the compressed file's when read raw
	cache  *Cache
	name   string
	id     fileID
	n      uint64
	err    error
	closed bool
}

func (r *checkedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.body.Read(p)
	r.n += uint64(n)
	switch {
	case r.n > r.size:
		err = fmt.Errorf("%w: %s longer than the %d bytes expected", ErrDamaged, filepath.Base(r.name), r.size)
	case err == io.EOF && r.n != r.size:
		err = fmt.Errorf("%w: %s has %d bytes, %d expected", ErrDamaged, filepath.Base(r.name), r.n, r.size)
	}
	if err != nil && err != io.EOF {
		if !errors.Is(err, ErrDamaged) {
			err = fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		err = fmt.Errorf("read cached NAR of %s: %w", r.entry.Path, err)
		if rmErr := r.cache.removeDamaged(r.entry, r.name, r.id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

func (r *checkedReader) Close() error {
	if !r.closed {
		r.closed = true
		defer r.cache.endIO()
	}
	return r.body.Close()
}

type zstdFile struct {
	f     *os.File
	zr    *zstd.Decoder
	cache *Cache
}

func (c *Cache) newZstdFile(f *os.File) (*zstdFile, error) {
	zr, _ := c.decoders.Get().(*zstd.Decoder)
	if zr == nil {
		// Single-goroutine, bounded-window decoding keeps memory flat no
		// matter how large the NAR is, and leaves nothing running between
		// reads, so a decoder can wait in the pool.
		var err error
		zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
	}
	if err := zr.Reset(f); err != nil {
		zr.Close() // not back in the pool: a decoder that failed may stay failed
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return &zstdFile{f: f, zr: zr, cache: c}, nil
}

// release returns the decoder to the pool; the file stays open.
func (z *zstdFile) release() {
	if z.zr == nil {
		return
	}
	if z.zr.Reset(nil) == nil {
		z.cache.decoders.Put(z.zr)
	}
	z.zr = nil
}

func (z *zstdFile) Read(p []byte) (int, error) {
	n, err := z.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return n, err
}

func (z *zstdFile) Close() error {
	z.release()
	return z.f.Close()
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }
