package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/decross-store/decross-store/narcache"
)

// TestNarFile: the stored NAR is the plain one until the entry is
// compacted, then the compressed file; both are the NAR QueryPathInfo
// describes. An evicted entry is rebuilt, and an unservable path is
// ErrNotServed.
func TestNarFile(t *testing.T) {
	f := newFixture(t)
	s := f.store(t)
	ctx := context.Background()
	info, err := s.QueryPathInfo(ctx, nativeHello)
	if err != nil {
		t.Fatal(err)
	}
	want := readNAR(t, s, nativeHello)

	read := func(wantCompressed bool) {
		t.Helper()
		st, err := s.NarFile(ctx, nativeHello)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(st)
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Compressed != wantCompressed || st.NarHash != info.NarHash || st.NarSize != info.NarSize || st.Size != int64(len(b)) {
			t.Fatalf("NarFile = compressed %v, hash %s, narSize %d, size %d (read %d); want compressed %v and the path info's hash and size",
				st.Compressed, st.NarHash, st.NarSize, st.Size, len(b), wantCompressed)
		}
		if wantCompressed {
			zr, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer zr.Close()
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(b, want) {
			t.Fatal("stored NAR differs from NarFromPath's")
		}
	}
	read(false)

	other, err := narcache.Open(f.cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	js, err := os.ReadFile(filepath.Join(f.cacheDir, hashPart(nativeHello)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Key string }
	if err := json.Unmarshal(js, &meta); err != nil {
		t.Fatal(err)
	}
	e, err := other.Lookup(nativeHello, meta.Key)
	if err != nil || e == nil {
		t.Fatalf("lookup: %v, %v", e, err)
	}
	if err := other.Compact(e); err != nil {
		t.Fatal(err)
	}
	read(true)

	// Evicted by another process: rebuilt, plain again.
	if err := other.Remove(nativeHello); err != nil {
		t.Fatal(err)
	}
	reads := f.up.narReads.Load()
	read(false)
	if got := f.up.narReads.Load(); got != reads+1 {
		t.Errorf("upstream NAR read %d more times, want 1 (a rebuild)", got-reads)
	}

	if _, err := s.NarFile(ctx, nativeLeaky); !errors.Is(err, ErrNotServed) {
		t.Errorf("NarFile of the leaky path: %v, want ErrNotServed", err)
	}
}
