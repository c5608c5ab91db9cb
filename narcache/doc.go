// Package narcache keeps rewritten NARs and their path info on disk.
//
// Each entry is named after the served path's hash part: <hash>.json (its
// metadata) and the NAR, first as <hash>.nar (plain) and then, compacted
// in the background, as <hash>.nar.zst (zstd). Writing the NAR plain keeps
// compression off the critical path of the first request for a path;
// compaction runs once no NAR of the cache has been read or written in
// this process for a while, and pauses between chunks when a transfer
// starts. Every file is written to a temporary name and renamed, the
// metadata last, so no process sees a half-written entry.
//
// Nothing is fsynced: what a power loss leaves of recent entries is
// caught before it is served (see Writer.Commit) and rebuilt.
//
// An entry carries a key chosen by the caller (what the NAR was derived
// from); a lookup with another key misses, so a changed input is rebuilt
// rather than served stale. The NAR is checked against its recorded
// SHA-256 before a process first serves it for that entry, and again
// whenever the file's identity (inode, size, mtime) changes. While it
// streams, the length (and for zstd the frame checksum) is checked. A
// damaged entry is removed and reported, never served. Temporary files of
// a process that died while writing are removed when the cache is next
// opened, once they are clearly abandoned.
//
// With a size bound (WithMaxSize), the least recently served entries are
// evicted once the entries take more. Several processes may share a
// directory: readers and writers hold a shared flock on the NAR file they
// use, and eviction takes an exclusive one without waiting, skipping
// entries in use; recency is the metadata file's mtime, refreshed when an
// entry is served. An entry evicted after it was looked up opens as
// ErrEvicted, so that the caller rebuilds it.
package narcache
