package narcache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

const otherPath = "/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-busy-1.0"

// compacted tells whether path's entry is in its compressed form only.
func compacted(t *testing.T, dir, path string) bool {
	t.Helper()
	base := filepath.Join(dir, path[11:43])
	_, zerr := os.Stat(base + ".nar.zst")
	_, perr := os.Stat(base + ".nar")
	return zerr == nil && errors.Is(perr, os.ErrNotExist)
}

func temps(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestCompactionWaitsForQuietCache: an entry is compacted only once no
// NAR of the whole cache has been read or written for the delay. Time is
// synctest's: every Wait returns once the compactor is blocked, which also
// shows that it waits rather than polls.
func TestCompactionWaitsForQuietCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		c := openCache(t, dir)
		data := bytes.Repeat([]byte("compressible nar bytes "), 100000)
		e := put(t, c, "k", data)
		busy := putAt(t, c, otherPath, "b", bytes.Repeat([]byte("busy"), 1000))

		// A transfer of another entry holds back the compaction of this one.
		r, err := c.Open(busy)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * c.compactDelay)
		synctest.Wait()
		if compacted(t, dir, testPath) || compacted(t, dir, otherPath) {
			t.Fatal("compacted while a NAR of the cache was being read")
		}
		// The reader of the plain NAR reads it whole even though compaction
		// may replace it as soon as it is closed.
		if got, err := io.ReadAll(r); err != nil || len(got) != 4000 {
			t.Fatalf("plain read: %d bytes, %v", len(got), err)
		}
		r.Close()

		// So does an entry being written.
		w, err := c.Create("/nix/store/1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c-new-1.0")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("partial"))
		time.Sleep(10 * c.compactDelay)
		synctest.Wait()
		if compacted(t, dir, testPath) {
			t.Fatal("compacted while a NAR was being written")
		}
		w.Abort()

		// Then the delay counts from the end of the last transfer.
		time.Sleep(c.compactDelay - time.Nanosecond)
		synctest.Wait()
		if compacted(t, dir, testPath) {
			t.Fatal("compacted before the cache was quiet for the delay")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !compacted(t, dir, testPath) || !compacted(t, dir, otherPath) {
			t.Fatal("not compacted once the cache was quiet")
		}
		zfi, _ := os.Stat(filepath.Join(dir, testPath[11:43]+".nar.zst"))
		if zfi.Size() >= int64(len(data))/4 {
			t.Errorf("compressed NAR has %d bytes for %d of repetitive data", zfi.Size(), len(data))
		}
		if got, err := readAll(t, c, e); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("compressed read: %d bytes, %v", len(got), err)
		}
		// A restarted process verifies the compressed NAR and serves it.
		c2 := openCache(t, dir)
		if got, err := readAll(t, c2, e); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read after restart: %d bytes, %v", len(got), err)
		}
	})
}

// TestCompactionPausesMidFile: a transfer that starts while an entry is
// being compressed pauses the compression at the next chunk, with the
// partial output only in a temporary file; it resumes once the cache has
// been quiet for the delay, or is dropped when the cache closes.
func TestCompactionPausesMidFile(t *testing.T) {
	for _, end := range []string{"resume", "close"} {
		t.Run(end, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				c := openCache(t, dir)
				data := make([]byte, 4*compactChunk+100)
				for i := range data {
					data[i] = byte(i % 61)
				}
				// Compressed by another process: only the entry below is queued.
				other := openCache(t, dir)
				busy := putAt(t, other, otherPath, "b", bytes.Repeat([]byte("busy"), 1000))
				if err := other.Compact(busy); err != nil {
					t.Fatal(err)
				}
				other.Close()
				// Set before the compactor starts, with the first commit.
				chunks := make(chan int, 100)
				readers := make(chan io.ReadCloser, 1)
				c.chunkDone = func() {
					chunks <- 1
					if len(chunks) == 1 {
						r, err := c.Open(busy)
						if err != nil {
							t.Error(err)
							return
						}
						readers <- r
					}
				}
				e := put(t, c, "k", data)
				time.Sleep(c.compactDelay)
				synctest.Wait()
				if len(chunks) != 1 || len(readers) != 1 {
					t.Fatalf("%d chunks compressed, %d readers; want 1 and 1", len(chunks), len(readers))
				}
				r := <-readers
				time.Sleep(time.Hour)
				synctest.Wait()
				if len(chunks) != 1 {
					t.Fatalf("%d chunks compressed while a transfer was running, want 1", len(chunks))
				}
				if compacted(t, dir, testPath) || len(temps(t, dir)) != 1 {
					t.Fatalf("while paused: compacted %v, temporary files %v; want the partial output only in one", compacted(t, dir, testPath), temps(t, dir))
				}
				if got, err := readAll(t, c, e); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("plain read while paused: %d bytes, %v", len(got), err)
				}

				if end == "close" {
					c.Close()
					if tmps := temps(t, dir); len(tmps) != 0 || compacted(t, dir, testPath) {
						t.Fatalf("after Close while paused: temporary files %v, compacted %v", tmps, compacted(t, dir, testPath))
					}
					r.Close()
					return
				}
				if _, err := io.ReadAll(r); err != nil {
					t.Fatal(err)
				}
				r.Close()
				time.Sleep(c.compactDelay)
				synctest.Wait()
				if !compacted(t, dir, testPath) || len(temps(t, dir)) != 0 {
					t.Fatalf("after the pause: compacted %v, temporary files %v", compacted(t, dir, testPath), temps(t, dir))
				}
				if n := len(chunks); n != 5 {
					t.Errorf("%d chunks compressed, want 5 (4 whole, 1 partial)", n)
				}
				if got, err := readAll(t, openCache(t, dir), e); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("compressed read: %d bytes, %v", len(got), err)
				}
			})
		})
	}
}
