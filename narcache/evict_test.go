package narcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// storePath returns the i-th of a set of distinct store paths.
func storePath(i int) string {
	return fmt.Sprintf("/nix/store/%032d-p-%d", i, i)
}

func narOf(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte((i + 1) * (j + 3) % 251)
	}
	return b
}

// dirBytes is what the directory holds, every file counted.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, de := range ents {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// entryBytes is the size of one entry of narSize bytes, metadata included.
func entryBytes(t *testing.T, narSize int) int64 {
	t.Helper()
	dir := t.TempDir()
	c := openCache(t, dir)
	putAt(t, c, storePath(0), "k", narOf(0, narSize))
	return dirBytes(t, dir)
}

// TestEvictionKeepsTheBound serves twice a set of paths three times
// larger than the bound, the way the store does (look up, build on a
// miss, read): the directory stays within the bound plus one entry, every
// read returns the right bytes, and evicted paths are built again.
func TestEvictionKeepsTheBound(t *testing.T) {
	const narSize, paths = 64 << 10, 12
	one := entryBytes(t, narSize)
	bound := 4 * one
	dir := t.TempDir()
	c := openCache(t, dir, WithMaxSize(bound))
	built := 0
	for round := range 2 {
		for i := range paths {
			p := storePath(i)
			e, err := c.Lookup(p, "k")
			if err != nil {
				t.Fatal(err)
			}
			if e == nil {
				e = putAt(t, c, p, "k", narOf(i, narSize))
				built++
			}
			got, err := readAll(t, c, e)
			if err != nil || !bytes.Equal(got, narOf(i, narSize)) {
				t.Fatalf("round %d, path %d: read %d bytes, %v", round, i, len(got), err)
			}
			if n := dirBytes(t, dir); n > bound+one {
				t.Fatalf("round %d, path %d: the directory holds %d bytes, bound %d plus one entry of %d", round, i, n, bound, one)
			}
		}
	}
	// Read in a cycle, least recently served first: every path misses.
	if built != 2*paths {
		t.Errorf("%d builds, want %d", built, 2*paths)
	}
	st := c.Stats()
	if st.Hits != 0 || st.Misses != 2*paths || st.Evictions < 2*paths-4 || st.Damaged != 0 {
		t.Errorf("stats %+v: want 0 hits, %d misses, at least %d evictions, nothing damaged", st, 2*paths, 2*paths-4)
	}
	if st.Bytes != dirBytes(t, dir) || st.Bytes > bound || st.MaxBytes != bound {
		t.Errorf("stats say %d bytes (max %d), the directory holds %d, bound %d", st.Bytes, st.MaxBytes, dirBytes(t, dir), bound)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(ents) != st.Entries {
		t.Errorf("stats say %d entries, the directory holds %d", st.Entries, len(ents))
	}
}

// TestEvictionIsLeastRecentlyServed: serving an entry keeps it over
// entries committed after it but not served since.
func TestEvictionIsLeastRecentlyServed(t *testing.T) {
	const narSize = 10000
	one := entryBytes(t, narSize)
	dir := t.TempDir()
	c := openCache(t, dir, WithMaxSize(3*one))
	var es []*Entry
	for i := range 3 {
		es = append(es, putAt(t, c, storePath(i), "k", narOf(i, narSize)))
	}
	if _, err := readAll(t, c, es[0]); err != nil {
		t.Fatal(err)
	}
	putAt(t, c, storePath(3), "k", narOf(3, narSize))
	for i, want := range []bool{true, false, true, true} {
		if e, _ := c.Lookup(storePath(i), "k"); (e != nil) != want {
			t.Errorf("path %d present %v, want %v", i, e != nil, want)
		}
	}
	// Another process sees the recency through the metadata's mtime.
	other := openCache(t, dir, WithMaxSize(3*one))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, storePath(2)[11:43]+".json"), old, old)
	putAt(t, other, storePath(4), "k", narOf(4, narSize))
	if e, _ := c.Lookup(storePath(2), "k"); e != nil {
		t.Error("the entry served longest ago (per its mtime) was kept by another process")
	}
}

// TestEvictionSkipsEntriesInUse: an entry being read, by this process or
// another sharing the directory, or being written, is never evicted.
func TestEvictionSkipsEntriesInUse(t *testing.T) {
	for _, reader := range []string{"same process", "other process"} {
		t.Run(reader, func(t *testing.T) {
			const narSize = 300000
			one := entryBytes(t, narSize)
			dir := t.TempDir()
			c := openCache(t, dir, WithMaxSize(2*one))
			rc := c
			if reader == "other process" {
				rc = openCache(t, dir)
			}
			oldest := putAt(t, c, storePath(0), "k", narOf(0, narSize))
			r, err := rc.Open(oldest)
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, 1000)
			if _, err := io.ReadFull(r, first); err != nil {
				t.Fatal(err)
			}
			w, err := c.Create(storePath(9))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(narOf(9, narSize))
			for i := 1; i <= 3; i++ {
				putAt(t, c, storePath(i), "k", narOf(i, narSize))
			}
			if e, _ := c.Lookup(storePath(0), "k"); e == nil {
				t.Fatal("an entry being read was evicted")
			}
			if tmps := temps(t, dir); len(tmps) != 1 {
				t.Fatalf("temporary files %v, want the one being written", tmps)
			}
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(append(first, rest...), narOf(0, narSize)) {
				t.Fatalf("reading the entry held open: %d bytes, %v", len(first)+len(rest), err)
			}
			r.Close()
			if _, err := w.Commit(Entry{Key: "k"}); err != nil {
				t.Fatal(err)
			}
			if e, _ := c.Lookup(storePath(0), "k"); e != nil {
				t.Fatal("the entry no longer in use was not evicted")
			}
			if got, err := readAll(t, c, &Entry{Path: storePath(9), Key: "k", NarHash: sha(narOf(9, narSize)), NarSize: narSize}); err != nil || !bytes.Equal(got, narOf(9, narSize)) {
				t.Fatalf("the entry written meanwhile: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestEvictedBetweenLookupAndOpen: an entry another process evicts after
// this one looked it up is reported as ErrEvicted (also ErrDamaged, so the
// store rebuilds it), not as damage: nothing counted, nothing else removed.
func TestEvictedBetweenLookupAndOpen(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir)
	putAt(t, c, testPath, "k", narOf(0, 5000))
	e, err := c.Lookup(testPath, "k")
	if err != nil || e == nil {
		t.Fatalf("Lookup = %v, %v", e, err)
	}
	other := openCache(t, dir, WithMaxSize(1))
	putAt(t, other, storePath(1), "k", narOf(1, 5000))
	if _, err := os.Stat(filepath.Join(dir, testPath[11:43]+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the other process did not evict the entry: %v", err)
	}
	_, err = c.Open(e)
	if !errors.Is(err, ErrEvicted) || !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open of an evicted entry: %v, want ErrEvicted (and ErrDamaged)", err)
	}
	if st := c.Stats(); st.Damaged != 0 {
		t.Errorf("an eviction counted as damage: %+v", st)
	}
	if e, _ := c.Lookup(storePath(1), "k"); e == nil {
		t.Error("the other process's entry is gone")
	}
	if e, _ := c.Lookup(testPath, "k"); e != nil {
		t.Fatal("an evicted entry is found")
	}
	rebuilt := putAt(t, c, testPath, "k", narOf(0, 5000))
	if got, err := readAll(t, c, rebuilt); err != nil || !bytes.Equal(got, narOf(0, 5000)) {
		t.Fatalf("rebuilt entry: %d bytes, %v", len(got), err)
	}
}
