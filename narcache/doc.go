// Package narcache keeps rewritten NARs and their path info on disk.
//
// Each entry is named after the served path's hash part: <hash>.json (its
// metadata) and the NAR, first as <hash>.nar (plain) and then, compacted
// in the background, as <hash>.nar.zst (zstd). Writing the NAR plain keeps
// compression off the critical path of the first request for a path;
// compaction runs once no reader has the entry open. Every file is written
// to a temporary name, fsynced and renamed, the metadata last, so a crash
// leaves either a complete entry or none.
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
package narcache
