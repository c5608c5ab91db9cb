package narcache

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/decross-store/decross-store/pathinfo"
)

// compactChunk is how much a compaction reads between two checks that the
// cache is still quiet.
const compactChunk = 1 << 20

// errClosed stops a compaction when the cache is closed.
var errClosed = errors.New("cache closed")

// scheduleCompaction queues e for compression in the background. A full
// queue drops it: the next Open of the plain NAR queues it again.
func (c *Cache) scheduleCompaction(e *Entry) {
	c.mu.Lock()
	if c.queued[e.Path] {
		c.mu.Unlock()
		return
	}
	c.queued[e.Path] = true
	c.mu.Unlock()
	c.startOnce.Do(func() {
		// Under mu, like background: Close closes c.closed under mu, so
		// no worker is added once it waits for them.
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-c.closed:
		default:
			c.worker.Add(1)
			go c.compactor()
		}
	})
	select {
	case c.compactQ <- e:
	default:
		c.unqueue(e.Path)
	}
}

func (c *Cache) unqueue(path string) {
	c.mu.Lock()
	delete(c.queued, path)
	c.mu.Unlock()
}

// waitQuiet returns once no NAR of the cache has been read or written in
// this process for compactDelay, false if the cache is closed first.
// Compression then never competes with a transfer for the disk or a core.
// It waits on activity changes and a timer, never polls.
func (c *Cache) waitQuiet() bool {
	for {
		c.mu.Lock()
		busy, last, changed := c.busy, c.lastBusy, c.activity
		c.mu.Unlock()
		var timer *time.Timer
		var timeout <-chan time.Time
		if busy == 0 {
			wait := c.compactDelay - time.Since(last)
			if wait <= 0 {
				return true
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case <-changed:
		case <-timeout:
		case <-c.closed:
			return false
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// compactor compresses queued entries one at a time, each once the whole
// cache has been quiet for compactDelay, pausing between chunks whenever
// a transfer starts.
func (c *Cache) compactor() {
	defer c.worker.Done()
	for {
		var e *Entry
		select {
		case e = <-c.compactQ:
		case <-c.closed:
			return
		}
		// An error leaves the entry as it was (plain, or removed when
		// damaged); there is nobody to report it to but the next reader.
		_ = c.compact(e, true)
		c.unqueue(e.Path)
	}
}

// Compact replaces the plain NAR of e with a zstd-compressed one, checking
// the plain bytes against e on the way. It does nothing when there is no
// plain NAR (already compacted, or removed).
func (c *Cache) Compact(e *Entry) error {
	return c.compact(e, false)
}

// compact is Compact; with pause, it waits for the cache to be quiet
// before every chunk. The compressed NAR is written to a temporary file
// and renamed only once complete, so a pause or a stop never leaves a
// partial NAR under an entry's name.
func (c *Cache) compact(e *Entry, pause bool) error {
	files, err := c.files(e.Path)
	if err != nil {
		return err
	}
	if pause && !c.waitQuiet() {
		return errClosed
	}
	f, err := os.Open(files.plain)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	defer f.Close()
	// A reader like any other: no process evicts the entry meanwhile.
	if err := lockShared(f); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	id := identityOf(fi)

	tmp, err := os.CreateTemp(c.dir, ".tmp-*.nar.zst")
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Fastest level with a small window: memory stays flat, and NARs of
	// binaries still shrink by about a third.
	zw, err := zstd.NewWriter(tmp, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	defer zw.Close()
	h := sha256.New()
	out := io.MultiWriter(zw, h)
	in := io.LimitReader(f, int64(e.NarSize)+1)
	buf := make([]byte, compactChunk)
	var n int64
	for first := true; ; first = false {
		if pause && !first && !c.waitQuiet() {
			return errClosed
		}
		k, rerr := io.ReadFull(in, buf)
		if k > 0 {
			if _, err := out.Write(buf[:k]); err != nil {
				return fmt.Errorf("compact %s: %w", e.Path, err)
			}
			n += int64(k)
		}
		if c.chunkDone != nil {
			c.chunkDone()
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("compact %s: %w", e.Path, rerr)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	var got pathinfo.NarHash
	copy(got[:], h.Sum(nil))
	if uint64(n) != e.NarSize || got != e.NarHash {
		// Another process sharing the directory may have rebuilt the entry
		// since e was queued: then the NAR is not damaged, e is stale.
		if !c.current(e) {
			return nil
		}
		err := fmt.Errorf("compact %s: %w: NAR has %d bytes and hash %s, metadata says %d bytes and %s", e.Path, ErrDamaged, n, got, e.NarSize, e.NarHash)
		if rmErr := c.removeDamaged(e, files.plain, id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return err
	}
	// No fsync: a compressed NAR that did not reach the disk before a
	// power loss fails verification, and the entry is rebuilt (see Commit).
	zfi, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}

	c.mu.Lock()
	// A commit may have replaced the entry meanwhile: then this is stale.
	if current, err := identity(files.plain); err != nil || current != id {
		c.mu.Unlock()
		return nil
	}
	if err := os.Rename(tmp.Name(), files.zst); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	committed = true
	if zid, err := identity(files.zst); err == nil {
		c.verified[files.zst] = verifiedFile{id: zid, hash: e.NarHash, size: e.NarSize} // made from bytes just checked
	}
	delete(c.verified, files.plain)
	err = os.Remove(files.plain)
	c.mu.Unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	c.resized(e.Path[len("/nix/store/"):][:32], zfi.Size()-fi.Size())
	return nil
}
