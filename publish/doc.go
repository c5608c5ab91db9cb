// Package publish writes the paths of a store into a standard Nix binary
// cache (nix-cache-info, <hash>.narinfo, nar/<filehash>.nar[.zst|.xz]), on
// a local directory or an S3 bucket, so that any static file server can
// serve them to stock Nix clients.
//
// Writing is idempotent and never exposes a half-written path: a NAR is
// compressed into a temporary file while its file hash is computed, then
// made visible under its final name in one step (a rename, or one S3 PUT),
// and only then is the narinfo that points at it written, the same way,
// once the narinfos of all its references are there: the cache is always
// closed under references. A path whose narinfo already carries the
// publisher's signature over the same fingerprint, and whose NAR is
// there, is left alone, so a second run writes nothing.
package publish
