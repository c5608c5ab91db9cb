package narcache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPowerLossLeftovers writes what a power loss can leave of an entry
// whose files were renamed into place without an fsync, and checks that a
// process starting afterwards never serves it: Lookup misses, or Open
// finds the damage and removes the entry; either way a rebuild replaces
// it and is served.
func TestPowerLossLeftovers(t *testing.T) {
	data := narOf(7, 200000)
	for _, tc := range []struct {
		name       string
		compressed bool
		damage     func(t *testing.T, meta, plain, zst string)
		lookupHit  bool // found by Lookup, caught by Open's hash check
	}{
		{name: "metadata empty", damage: func(t *testing.T, meta, _, _ string) { write(t, meta, nil) }},
		{name: "metadata cut short", damage: func(t *testing.T, meta, _, _ string) { cut(t, meta) }},
		{name: "metadata without NAR", damage: func(t *testing.T, _, plain, _ string) { remove(t, plain) }},
		{name: "compressed: metadata without NAR", compressed: true, damage: func(t *testing.T, _, _, zst string) { remove(t, zst) }},
		{name: "NAR without metadata", damage: func(t *testing.T, meta, _, _ string) { remove(t, meta) }},
		{name: "plain NAR empty", damage: func(t *testing.T, _, plain, _ string) { write(t, plain, nil) }},
		{name: "plain NAR cut short", damage: func(t *testing.T, _, plain, _ string) { cut(t, plain) }},
		{name: "plain NAR of zeros", lookupHit: true, damage: func(t *testing.T, _, plain, _ string) { zero(t, plain) }},
		{name: "compressed NAR empty", compressed: true, damage: func(t *testing.T, _, _, zst string) { write(t, zst, nil) }},
		{name: "compressed NAR cut short", compressed: true, lookupHit: true, damage: func(t *testing.T, _, _, zst string) { cut(t, zst) }},
		{name: "compressed NAR of zeros", compressed: true, lookupHit: true, damage: func(t *testing.T, _, _, zst string) { zero(t, zst) }},
		{name: "new metadata beside the previous NAR", lookupHit: true, damage: func(t *testing.T, meta, plain, _ string) {
			// The rebuild's metadata reached the disk, its NAR did not.
			dir := t.TempDir()
			putAt(t, openCache(t, dir), testPath, "k", narOf(8, len(data)))
			js, err := os.ReadFile(filepath.Join(dir, filepath.Base(meta)))
			if err != nil {
				t.Fatal(err)
			}
			write(t, meta, js)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := openCache(t, dir)
			e := put(t, c, "k", data)
			if tc.compressed {
				if err := c.Compact(e); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			files := c.filesOf(testPath[11:43])
			tc.damage(t, files.meta, files.plain, files.zst)

			after := openCache(t, dir)
			found, err := after.Lookup(testPath, "k")
			if err != nil {
				t.Fatal(err)
			}
			if (found != nil) != tc.lookupHit {
				t.Fatalf("Lookup found an entry: %v, want %v", found != nil, tc.lookupHit)
			}
			if found != nil {
				if got, err := readAll(t, after, found); !errors.Is(err, ErrDamaged) {
					t.Fatalf("read of the leftover: %d bytes, err %v; want ErrDamaged", len(got), err)
				}
				if again, _ := after.Lookup(testPath, "k"); again != nil {
					t.Fatal("the damaged entry is still found")
				}
			}
			rebuilt := putAt(t, after, testPath, "k", data)
			if got, err := readAll(t, after, rebuilt); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("rebuilt entry: %d bytes, %v", len(got), err)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{testPath[11:43] + ".json", testPath[11:43] + ".nar"}) {
				t.Errorf("after the rebuild the directory holds %v", names)
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	return names
}

func write(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
}

func cut(t *testing.T, name string) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// zero keeps the length and loses the bytes, as when the size reached the
// disk and the data did not.
func zero(t *testing.T, name string) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	write(t, name, make([]byte, fi.Size()))
}
