// Package binarycache reads store paths from a Nix binary cache: a directory
// written by `nix copy --to file://...`, any HTTP(S) binary cache, or an
// S3-compatible bucket. It is the read side of an upstream: path metadata
// comes from <hash>.narinfo files, checked against trusted public keys (a CA
// field, which signatures do not cover, is kept only when the store path
// recomputed from it is the path itself), and NARs are decompressed (xz,
// zstd, bzip2, br, gzip or none) and checked against the narinfo's hashes
// and sizes while they stream, so that nothing unverified is ever handed out
// as a complete NAR. Since the NAR file is not covered by the narinfo's
// signature, decompressors are held to bounded memory: an xz block that
// declares an LZMA2 dictionary over 64 MiB, or a zstd frame with a window
// over 128 MiB, is refused before it is allocated.
//
// Requests for small files and the start of a NAR download are retried a
// bounded number of times on server errors, timeouts and truncated bodies;
// a NAR body that breaks or stalls mid-stream fails the read. A Cache is
// safe for concurrent use.
package binarycache
