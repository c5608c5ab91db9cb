// Package narcache keeps rewritten NARs and their path info on disk.
//
// Each entry is two files named after the served path's hash part:
// <hash>.nar.zst (the NAR, zstd-compressed) and <hash>.json (its metadata).
// Both are written to temporary files, fsynced and renamed, the metadata
// last, so a crash leaves either a complete entry or none.
//
// An entry carries a key chosen by the caller (what the NAR was derived
// from); a lookup with another key misses, so a changed input is rebuilt
// rather than served stale. The NAR is checked against its recorded hash
// before it is first served by a process, and again whenever the file's
// identity (inode, size, mtime) changes; a damaged entry is removed and
// reported as a miss, never served.
package narcache
