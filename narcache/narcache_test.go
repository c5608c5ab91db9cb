package narcache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

const testPath = "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-hello-2.12"

func put(t *testing.T, c *Cache, key string, data []byte) *Entry {
	t.Helper()
	return putAt(t, c, testPath, key, data)
}

func putAt(t *testing.T, c *Cache, path, key string, data []byte) *Entry {
	t.Helper()
	w, err := c.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit(Entry{Key: key, References: []string{path}, RegistrationTime: 42})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// openCache opens a cache whose background compactor stops with the test,
// so it cannot write into a directory being removed.
func openCache(t *testing.T, dir string, opts ...Option) *Cache {
	t.Helper()
	c, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putCompacted is put, then compaction to the zstd form.
func putCompacted(t *testing.T, c *Cache, key string, data []byte) *Entry {
	t.Helper()
	e := put(t, c, key, data)
	if err := c.Compact(e); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), testPath[11:43]+".nar.zst")); err != nil {
		t.Fatalf("no compressed NAR after Compact: %v", err)
	}
	return e
}

func readAll(t *testing.T, c *Cache, e *Entry) ([]byte, error) {
	t.Helper()
	r, err := c.Open(e)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	data := bytes.Repeat([]byte("nix-archive-1 some bytes "), 100000)
	e := put(t, c, "k1", data)
	if e.NarSize != uint64(len(data)) || e.NarHash != sha256.Sum256(data) {
		t.Fatalf("entry size/hash = %d/%s", e.NarSize, e.NarHash)
	}

	// A new Cache on the same directory (a restarted server) sees the entry
	// and verifies it before serving.
	c2 := openCache(t, dir)
	got, err := c2.Lookup(testPath, "k1")
	if err != nil || got == nil {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	if got.NarHash != e.NarHash || got.NarSize != e.NarSize || got.RegistrationTime != 42 || len(got.References) != 1 {
		t.Fatalf("Lookup entry = %+v, want %+v", got, e)
	}
	b, err := readAll(t, c2, got)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("Open read %d bytes, err %v", len(b), err)
	}
	if miss, err := c2.Lookup(testPath, "other-key"); miss != nil || err != nil {
		t.Fatalf("Lookup with another key = %v, %v; want miss", miss, err)
	}
	if pi := got.PathInfo(); pi.Path != testPath || pi.NarHash != e.NarHash {
		t.Fatalf("PathInfo = %+v", pi)
	}
}

func TestDamagedNARIsNotServed(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 4096)
	putCompacted(t, c, "k", data)

	// Replace the NAR with a valid zstd stream of other bytes: only the
	// hash check can catch this.
	other := openCache(t, t.TempDir())
	putCompacted(t, other, "x", bytes.Repeat([]byte{9}, len(data)))
	hashPart := testPath[11:43]
	forged, _ := os.ReadFile(filepath.Join(other.dir, hashPart+".nar.zst"))
	if err := os.WriteFile(filepath.Join(dir, hashPart+".nar.zst"), forged, 0o644); err != nil {
		t.Fatal(err)
	}

	c2 := openCache(t, dir)
	e, err := c2.Lookup(testPath, "k")
	if err != nil || e == nil {
		t.Fatalf("Lookup = %v, %v", e, err)
	}
	if _, err := c2.Open(e); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of damaged entry: err = %v, want ErrDamaged", err)
	}
	if e, _ := c2.Lookup(testPath, "k"); e != nil {
		t.Fatal("damaged entry still present after failed Open")
	}
}

func TestTruncatedNARIsDamaged(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	for _, form := range []string{".nar", ".nar.zst"} {
		e := put(t, c, "k", bytes.Repeat([]byte("abcdefgh"), 10000))
		if form == ".nar.zst" {
			c.Compact(e)
		}
		nar := filepath.Join(dir, testPath[11:43]+form)
		b, err := os.ReadFile(nar)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(nar, b[:len(b)/2], 0o644)
		if _, err := c.Open(e); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Open of truncated %s entry: err = %v, want ErrDamaged", form, err)
		}
	}
}

func TestGarbageMetadataIsAMiss(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	put(t, c, "k", []byte("x"))
	os.WriteFile(filepath.Join(dir, testPath[11:43]+".json"), []byte("{not json"), 0o644)
	if e, err := c.Lookup(testPath, "k"); e != nil || err != nil {
		t.Fatalf("Lookup = %v, %v; want miss", e, err)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	w, err := c.Create(testPath)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	w.Abort()
	w.Abort()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("directory not empty after Abort: %v", ents)
	}
	if e, _ := c.Lookup(testPath, "k"); e != nil {
		t.Fatal("aborted entry visible")
	}
}

func TestRejectsNonStorePath(t *testing.T) {
	c := openCache(t, t.TempDir())
	for _, p := range []string{"/tmp/../etc/passwd", testPath + "/..", testPath + "/../0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b-x"} {
		if _, err := c.Create(p); err == nil {
			t.Fatalf("Create accepted %q", p)
		}
	}
}

// TestDamageAfterVerificationIsCaught flips bytes of the NAR in place,
// keeping inode, size and mtime, after the process has verified it once:
// the streaming checks must still fail the read and remove the entry.
func TestDamageAfterVerificationIsCaught(t *testing.T) {
	for _, off := range []string{"start", "middle", "end"} {
		t.Run(off, func(t *testing.T) {
			dir := t.TempDir()
			c := openCache(t, dir)
			data := make([]byte, 300000)
			for i := range data {
				data[i] = byte(i * 7 % 251)
			}
			e := putCompacted(t, c, "k", data)
			if b, err := readAll(t, c, e); err != nil || !bytes.Equal(b, data) {
				t.Fatalf("first read: %d bytes, %v", len(b), err)
			}
			narFile := filepath.Join(dir, testPath[11:43]+".nar.zst")
			fi, _ := os.Stat(narFile)
			at := map[string]int64{"start": 20, "middle": fi.Size() / 2, "end": fi.Size() - 6}[off]
			f, err := os.OpenFile(narFile, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			f.ReadAt(b, at)
			for i := range b {
				b[i] ^= 0x5a
			}
			f.WriteAt(b, at)
			f.Close()
			os.Chtimes(narFile, fi.ModTime(), fi.ModTime())

			got, err := readAll(t, c, e)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("read of a NAR damaged after verification: %d bytes, err = %v, want ErrDamaged", len(got), err)
			}
			if got, _ := c.Lookup(testPath, "k"); got != nil {
				t.Fatal("damaged entry still in the cache")
			}
		})
	}
}

func TestMissingNARRemovesEntry(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	e := put(t, c, "k", []byte("some nar"))
	os.Remove(filepath.Join(dir, testPath[11:43]+".nar"))
	if _, err := c.Open(e); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open with the NAR file gone: err = %v, want ErrDamaged", err)
	}
	if got, _ := c.Lookup(testPath, "k"); got != nil {
		t.Fatal("metadata of an entry without NAR is still found: the path could never be rebuilt")
	}
}

// TestStaleReaderKeepsRebuiltEntry: a reader of a damaged file that fails
// only after the entry was rebuilt must not delete the new entry.
func TestStaleReaderKeepsRebuiltEntry(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 13 % 253)
	}
	e := putCompacted(t, c, "k", data)
	r, err := c.Open(e)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Truncate the open file: its reader will fail at the end.
	narFile := filepath.Join(dir, testPath[11:43]+".nar.zst")
	fi, _ := os.Stat(narFile)
	os.Truncate(narFile, fi.Size()-8)
	// Meanwhile the entry is rebuilt (a new file under the same name).
	put(t, c, "k2", data)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrDamaged) {
		t.Fatalf("stale reader: err = %v, want ErrDamaged", err)
	}
	if got, _ := c.Lookup(testPath, "k2"); got == nil {
		t.Fatal("the stale reader removed the rebuilt entry")
	}
}

// TestCompactionChecksThePlainNAR: damage to the plain NAR after it was
// written is caught when it is compacted, and the entry removed.
func TestCompactionChecksThePlainNAR(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	e := put(t, c, "k", bytes.Repeat([]byte("abcdefgh"), 10000))
	plain := filepath.Join(dir, testPath[11:43]+".nar")
	f, _ := os.OpenFile(plain, os.O_RDWR, 0)
	f.WriteAt([]byte("XXXX"), 100)
	f.Close()
	if err := c.Compact(e); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Compact of a damaged plain NAR: err = %v, want ErrDamaged", err)
	}
	if got, _ := c.Lookup(testPath, "k"); got != nil {
		t.Fatal("damaged entry still in the cache")
	}
	if _, err := os.Stat(plain + ".zst"); err == nil {
		t.Fatal("damaged bytes were compacted")
	}
}

// TestVerificationIsPerEntry: a file verified for one entry is not taken
// as verified for another entry naming the same file with another hash
// (two paths sharing a hash part, say), even without any change to it.
func TestVerificationIsPerEntry(t *testing.T) {
	c := openCache(t, t.TempDir())
	e := put(t, c, "k", bytes.Repeat([]byte("a"), 1000))
	if _, err := readAll(t, c, e); err != nil {
		t.Fatal(err)
	}
	other := *e
	other.NarHash[0] ^= 1
	if _, err := readAll(t, c, &other); !errors.Is(err, ErrDamaged) {
		t.Fatalf("open with another narHash: err = %v, want ErrDamaged", err)
	}
}

// TestStaleTempsRemoved: temporary files of a process killed while writing
// are removed when the cache is opened again; recent ones, which another
// process may still be writing, are kept.
func TestStaleTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, ".tmp-123.nar")
	recent := filepath.Join(dir, ".tmp-456.nar.zst")
	for _, name := range []string{old, recent} {
		if err := os.WriteFile(name, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	openCache(t, dir)
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent temporary file removed: %v", err)
	}
}

// TestStaleCompactionKeepsNewEntry: a compaction queued for an entry that
// has since been rebuilt with other bytes (by another process sharing the
// directory) leaves the new entry alone.
func TestStaleCompactionKeepsNewEntry(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	stale := put(t, c, "k1", bytes.Repeat([]byte("old"), 1000))
	fresh := put(t, openCache(t, dir), "k2", bytes.Repeat([]byte("new"), 1000))
	if err := c.Compact(stale); err != nil {
		t.Fatalf("stale Compact: %v", err)
	}
	got, err := c.Lookup(testPath, "k2")
	if err != nil || got == nil {
		t.Fatalf("rebuilt entry gone after a stale compaction: %v", err)
	}
	if b, err := readAll(t, c, fresh); err != nil || !bytes.Equal(b, bytes.Repeat([]byte("new"), 1000)) {
		t.Fatalf("rebuilt entry: %d bytes, %v", len(b), err)
	}
}

func sha(b []byte) (h [32]byte) { return sha256.Sum256(b) }

// Reading compacted entries reuses zstd decoders: a new one allocates
// over a megabyte, which for a closure of small paths cost more than
// decoding them.
func TestZstdDecodersAreReused(t *testing.T) {
	c := openCache(t, t.TempDir())
	data := bytes.Repeat([]byte("a small path's NAR "), 20000)
	e := putCompacted(t, c, "k", data)
	if _, err := readAll(t, c, e); err != nil { // the first read makes one
		t.Fatal(err)
	}
	const reads = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range reads {
		rc, err := c.Open(e)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != int64(len(data)) {
			t.Fatalf("read %d bytes: %v", n, err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > 128<<10 {
		t.Errorf("%d bytes allocated per read of a %d-byte entry: decoders are not reused", per, len(data))
	} else {
		t.Logf("%d bytes allocated per read", per)
	}
}
