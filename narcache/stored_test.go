package narcache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func readStored(t *testing.T, c *Cache, e *Entry) (*Stored, []byte, error) {
	t.Helper()
	st, err := c.OpenStored(e)
	if err != nil {
		return nil, nil, err
	}
	defer st.Close()
	b, err := io.ReadAll(st)
	return st, b, err
}

// TestOpenStored: before compaction the stored bytes are the plain NAR;
// after it, the compressed file itself, which decompresses to the NAR.
func TestOpenStored(t *testing.T) {
	data := bytes.Repeat([]byte("nix-archive-1 stored bytes "), 50000)
	tests := []struct {
		name    string
		compact bool
	}{
		{"plain", false},
		{"compacted", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir())
			e := put(t, c, "k", data)
			if tt.compact {
				if err := c.Compact(e); err != nil {
					t.Fatal(err)
				}
			}
			st, got, err := readStored(t, c, e)
			if err != nil {
				t.Fatal(err)
			}
			if st.Compressed != tt.compact || st.Size != int64(len(got)) || st.NarHash != e.NarHash || st.NarSize != e.NarSize {
				t.Fatalf("stored = compressed %v, size %d (read %d), hash %s, narSize %d; entry %s %d", st.Compressed, st.Size, len(got), st.NarHash, st.NarSize, e.NarHash, e.NarSize)
			}
			if !tt.compact {
				if !bytes.Equal(got, data) {
					t.Fatal("plain stored bytes differ from the NAR")
				}
				return
			}
			onDisk, err := os.ReadFile(filepath.Join(c.Dir(), testPath[11:43]+".nar.zst"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, onDisk) {
				t.Fatal("compressed stored bytes are not the file's")
			}
			zr, err := zstd.NewReader(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			defer zr.Close()
			nar, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(nar, data) {
				t.Fatalf("decompressed stored bytes differ from the NAR (%d bytes, %v)", len(nar), err)
			}
		})
	}
}

// TestOpenStoredDamage: a compressed file that does not hold the NAR is
// found on open (the first in this process), and one cut short after that
// check fails the read, not silently.
func TestOpenStoredDamage(t *testing.T) {
	data := bytes.Repeat([]byte("nix-archive-1 damaged "), 50000)
	zst := func(c *Cache) string { return filepath.Join(c.Dir(), testPath[11:43]+".nar.zst") }

	t.Run("on open", func(t *testing.T) {
		dir := t.TempDir()
		e := putCompacted(t, openCache(t, dir), "k", data)
		zero(t, zst(&Cache{dir: dir}))
		c := openCache(t, dir) // a new process: nothing verified yet
		if _, err := c.OpenStored(e); !errors.Is(err, ErrDamaged) {
			t.Fatalf("OpenStored of a zeroed file: %v, want ErrDamaged", err)
		}
		if _, err := os.Stat(zst(c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("damaged file kept: %v", err)
		}
	})
	t.Run("while streaming", func(t *testing.T) {
		c := openCache(t, t.TempDir())
		e := putCompacted(t, c, "k", data)
		st, err := c.OpenStored(e)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := os.Truncate(zst(c), st.Size/2); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(st); !errors.Is(err, ErrDamaged) {
			t.Fatalf("reading a file cut short: %v, want ErrDamaged", err)
		}
	})
	t.Run("evicted", func(t *testing.T) {
		c := openCache(t, t.TempDir())
		e := putCompacted(t, c, "k", data)
		if err := c.Remove(e.Path); err != nil {
			t.Fatal(err)
		}
		if _, err := c.OpenStored(e); !errors.Is(err, ErrEvicted) {
			t.Fatalf("OpenStored of a removed entry: %v, want ErrEvicted", err)
		}
	})
}
