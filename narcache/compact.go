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

// scheduleCompaction queues e for compression in the background. A full
// queue drops it: the next Open of the plain NAR queues it again.
func (c *Cache) scheduleCompaction(e *Entry) {
	c.mu.Lock()
	c.lastUse[e.Path] = time.Now()
	if c.queued[e.Path] {
		c.mu.Unlock()
		return
	}
	c.queued[e.Path] = true
	c.mu.Unlock()
	c.startOnce.Do(func() {
		c.worker.Add(1)
		go c.compactor()
	})
	if !c.requeue(e) {
		c.unqueue(e.Path)
	}
}

// requeue puts e (back) at the end of the queue, unless it is full.
func (c *Cache) requeue(e *Entry) bool {
	select {
	case c.compactQ <- e:
		return true
	default:
		return false
	}
}

func (c *Cache) unqueue(path string) {
	c.mu.Lock()
	delete(c.queued, path)
	delete(c.lastUse, path)
	c.mu.Unlock()
}

// untilQuiet is how long path must still go unread before it is
// compacted: compression does not compete with the transfers it would
// slow down.
func (c *Cache) untilQuiet(path string) time.Duration {
	c.quietChecks.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readers[path] > 0 {
		return c.compactDelay
	}
	return c.compactDelay - time.Since(c.lastUse[path])
}

// compactor compresses queued entries one at a time, each once it has
// gone unread for compactDelay. An entry still in use goes back to the end
// of the queue, so that one busy path does not hold up the others; once a
// whole pass of the queue has found nothing ready, it sleeps until the
// first entry can be.
func (c *Cache) compactor() {
	defer c.worker.Done()
	notReady, soonest := 0, time.Duration(0)
	for {
		var e *Entry
		select {
		case e = <-c.compactQ:
		case <-c.closed:
			return
		}
		if wait := c.untilQuiet(e.Path); wait > 0 {
			if !c.requeue(e) {
				c.unqueue(e.Path)
			}
			notReady++
			if soonest == 0 || wait < soonest {
				soonest = wait
			}
			if notReady >= len(c.compactQ) {
				select {
				case <-time.After(soonest):
				case <-c.closed:
					return
				}
				notReady, soonest = 0, 0
			}
			continue
		}
		notReady, soonest = 0, 0
		// An error leaves the entry as it was (plain, or removed when
		// damaged); there is nobody to report it to but the next reader.
		_ = c.Compact(e)
		c.unqueue(e.Path)
	}
}

// Compact replaces the plain NAR of e with a zstd-compressed one, checking
// the plain bytes against e on the way. It does nothing when there is no
// plain NAR (already compacted, or removed).
func (c *Cache) Compact(e *Entry) error {
	files, err := c.files(e.Path)
	if err != nil {
		return err
	}
	f, err := os.Open(files.plain)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	defer f.Close()
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
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(zw, h), io.LimitReader(f, int64(e.NarSize)+1))
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	var got pathinfo.NarHash
	copy(got[:], h.Sum(nil))
	if uint64(n) != e.NarSize || got != e.NarHash {
		// Another process sharing the directory may have rebuilt the entry
		// since e was queued: then the NAR is not damaged, e is stale.
		if current, err := c.readEntry(e.Path); err != nil || current == nil || current.NarHash != e.NarHash || current.NarSize != e.NarSize {
			return nil
		}
		err := fmt.Errorf("compact %s: %w: NAR has %d bytes and hash %s, metadata says %d bytes and %s", e.Path, ErrDamaged, n, got, e.NarSize, e.NarHash)
		if rmErr := c.removeDamaged(e.Path, files.plain, id); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// A commit may have replaced the entry meanwhile: then this is stale.
	if current, err := identity(files.plain); err != nil || current != id {
		return nil
	}
	if err := os.Rename(tmp.Name(), files.zst); err != nil {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	committed = true
	if zid, err := identity(files.zst); err == nil {
		c.verified[files.zst] = verifiedFile{id: zid, hash: e.NarHash, size: e.NarSize} // made from bytes just checked
	}
	delete(c.verified, files.plain)
	if err := os.Remove(files.plain); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compact %s: %w", e.Path, err)
	}
	return syncDir(c.dir)
}
