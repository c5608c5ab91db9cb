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
type Cache struct {
	dir string

	mu        sync.Mutex
	verified  map[string]fileID // by path: identity of the NAR file last verified
	verifying singleflight.Group
}

type fileID struct {
	ino   uint64
	size  int64
	mtime time.Time
}

// Open opens (creating if needed) the cache directory.
func Open(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	return &Cache{dir: dir, verified: make(map[string]fileID)}, nil
}

func (c *Cache) files(path string) (nar, meta string, err error) {
	if _, err := storepath.FromAbsolutePath(path); err != nil {
		return "", "", fmt.Errorf("cache file name for %q: %w", path, err)
	}
	hashPart := path[len(storepath.StoreDir)+1:][:32]
	base := filepath.Join(c.dir, hashPart)
	return base + ".nar.zst", base + ".json", nil
}

// Lookup returns the entry for path if it exists with the given key. A
// missing, foreign-keyed or unreadable entry is a miss (nil, nil); only I/O
// errors other than "not found" are returned.
func (c *Cache) Lookup(path, key string) (*Entry, error) {
	_, metaFile, err := c.files(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(metaFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache lookup %s: %w", path, err)
	}
	defer f.Close()
	var e Entry
	if err := json.NewDecoder(io.LimitReader(f, maxMetadataSize)).Decode(&e); err != nil {
		// Unparseable metadata is damage, not a reason to fail the request.
		return nil, nil
	}
	if e.Version != formatVersion || e.Key != key || e.Path != path {
		return nil, nil
	}
	h, err := pathinfo.ParseNarHash(e.NarHashString)
	if err != nil {
		return nil, nil
	}
	e.NarHash = h
	return &e, nil
}

// Writer receives one NAR for the cache. Commit makes it visible; Abort
// (safe after Commit) discards it.
type Writer struct {
	cache    *Cache
	path     string
	tmp      *os.File
	zw       *zstd.Encoder
	hash     *asynchash.Hasher
	done     bool
	narFile  string
	metaFile string
}

// Create starts a new entry for path.
func (c *Cache) Create(path string) (*Writer, error) {
	narFile, metaFile, err := c.files(path)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-*.nar.zst")
	if err != nil {
		return nil, fmt.Errorf("cache create %s: %w", path, err)
	}
	// Fastest level: the cache write is on the critical path of a cold
	// request, and NARs of binaries compress well even at this level.
	zw, err := zstd.NewWriter(tmp, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(1<<20))
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("cache create %s: %w", path, err)
	}
	return &Writer{cache: c, path: path, tmp: tmp, zw: zw, hash: asynchash.New(sha256.New()), narFile: narFile, metaFile: metaFile}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	w.hash.Write(p)
	return w.zw.Write(p)
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
func (w *Writer) Commit(meta Entry) (*Entry, error) {
	if w.done {
		return nil, fmt.Errorf("cache commit %s: writer already finished", w.path)
	}
	w.done = true
	sum := w.Sum() // also ends the hashing goroutine on every path below
	fail := func(err error) (*Entry, error) {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		return nil, fmt.Errorf("cache commit %s: %w", w.path, err)
	}
	if err := w.zw.Close(); err != nil {
		return fail(err)
	}
	if err := w.tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := w.tmp.Close(); err != nil {
		return fail(err)
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
	// The metadata of a previous entry must not survive next to the new
	// NAR, even for a moment: remove it first.
	if err := os.Remove(w.metaFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if err := os.Rename(w.tmp.Name(), w.narFile); err != nil {
		return fail(err)
	}
	if err := writeFileAtomic(w.metaFile, append(js, '\n')); err != nil {
		return nil, fmt.Errorf("cache commit %s: %w", w.path, err)
	}
	if err := syncDir(w.cache.dir); err != nil {
		return nil, fmt.Errorf("cache commit %s: %w", w.path, err)
	}
	// Freshly written from the bytes we hashed: no need to re-verify.
	if id, err := identity(w.narFile); err == nil {
		w.cache.mu.Lock()
		w.cache.verified[w.path] = id
		w.cache.mu.Unlock()
	}
	return &meta, nil
}

// Abort discards an uncommitted entry.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.hash.Close()
	w.zw.Close()
	w.tmp.Close()
	os.Remove(w.tmp.Name())
}

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
	if err := tmp.Sync(); err != nil {
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

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
	narFile, metaFile, err := c.files(path)
	if err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.verified, path)
	c.mu.Unlock()
	for _, f := range []string{metaFile, narFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cache remove %s: %w", path, err)
		}
	}
	return nil
}

// Open returns a reader of e's NAR. Unless this process has already
// verified the same file (same inode, size and mtime), the whole NAR is
// first checked against e's SHA-256; on a mismatch the entry is removed and
// the error wraps ErrDamaged.
//
// Damage after that check (bit rot, a truncated file) is caught while the
// NAR streams by zstd's frame checksum and by the length: the reader's last
// Read then fails with ErrDamaged instead of io.EOF and the entry is
// removed, so the client sees a broken transfer and the next request
// rebuilds. Not re-hashing with SHA-256 on every read keeps the warm path
// as fast as the network; a file replaced on purpose by a valid zstd stream
// of the same length would need write access to the cache, which could as
// well rewrite the metadata.
func (c *Cache) Open(e *Entry) (io.ReadCloser, error) {
	narFile, _, err := c.files(e.Path)
	if err != nil {
		return nil, err
	}
	// The descriptor streamed is the one whose identity was verified, so a
	// file replaced in between cannot slip through.
	f, err := os.Open(narFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("NAR file missing: %w", ErrDamaged)
			if rmErr := c.removeDamaged(e.Path, fileID{}); rmErr != nil {
				err = errors.Join(err, rmErr)
			}
		}
		return nil, fmt.Errorf("cache open %s: %w", e.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cache open %s: %w", e.Path, err)
	}
	id := identityOf(fi)
	damaged := func(err error) (io.ReadCloser, error) {
		f.Close()
		if rmErr := c.removeDamaged(e.Path, id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return nil, fmt.Errorf("cache open %s: %w", e.Path, err)
	}
	if err := c.verifyOnce(narFile, e, id); err != nil {
		return damaged(err)
	}
	zr, err := newZstdFile(f)
	if err != nil {
		return damaged(err)
	}
	return &checkedReader{zr: zr, entry: e, cache: c, id: id}, nil
}

// verifyOnce checks the NAR file with identity id against e, unless that
// was done before; concurrent requests for the same file share one check.
func (c *Cache) verifyOnce(narFile string, e *Entry, id fileID) error {
	c.mu.Lock()
	known, ok := c.verified[e.Path]
	c.mu.Unlock()
	if ok && known == id {
		return nil
	}
	key := fmt.Sprintf("%s\x00%d\x00%d\x00%d", e.Path, id.ino, id.size, id.mtime.UnixNano())
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
		if err := verify(f, e); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.verified[e.Path] = id
		c.mu.Unlock()
		return nil, nil
	})
	return err
}

// removeDamaged removes the entry for path if its NAR file is still the
// damaged one (identity id), or is missing: a reader of an old file must
// not delete an entry rebuilt meanwhile.
func (c *Cache) removeDamaged(path string, id fileID) error {
	narFile, _, err := c.files(path)
	if err != nil {
		return err
	}
	current, err := identity(narFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("cache remove %s: %w", path, err)
	case current != id:
		return nil // already rebuilt
	}
	return c.Remove(path)
}

func verify(f *os.File, e *Entry) error {
	zr, err := newZstdFile(f)
	if err != nil {
		return err
	}
	defer zr.zr.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(zr, int64(e.NarSize)+1))
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
	zr    *zstdFile
	entry *Entry
	cache *Cache
	id    fileID
	n     uint64
	err   error
}

func (r *checkedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.zr.Read(p)
	r.n += uint64(n)
	switch {
	case r.n > r.entry.NarSize:
		err = fmt.Errorf("%w: NAR longer than the %d bytes its metadata says", ErrDamaged, r.entry.NarSize)
	case err == io.EOF && r.n != r.entry.NarSize:
		err = fmt.Errorf("%w: NAR has %d bytes, metadata says %d", ErrDamaged, r.n, r.entry.NarSize)
	}
	if err != nil && err != io.EOF {
		if !errors.Is(err, ErrDamaged) {
			err = fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		err = fmt.Errorf("read cached NAR of %s: %w", r.entry.Path, err)
		if rmErr := r.cache.removeDamaged(r.entry.Path, r.id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

func (r *checkedReader) Close() error { return r.zr.Close() }

type zstdFile struct {
	f  *os.File
	zr *zstd.Decoder
}

func newZstdFile(f *os.File) (*zstdFile, error) {
	// Single-goroutine, bounded-window decoding keeps memory flat no matter
	// how large the NAR is.
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return &zstdFile{f: f, zr: zr}, nil
}

func (z *zstdFile) Read(p []byte) (int, error) {
	n, err := z.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return n, err
}

func (z *zstdFile) Close() error {
	z.zr.Close()
	return z.f.Close()
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.dir }
