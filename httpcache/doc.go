// Package httpcache serves a store as a Nix binary cache over HTTP: the
// same native paths the SSH door serves, for clients that name
// http://host:port/ as a substituter or a --from store.
//
// Three kinds of URL exist, for GET and HEAD only:
//   - /nix-cache-info: the store directory, WantMassQuery and the
//     priority;
//   - /<hash part>.narinfo: the signed path info of the served path with
//     that hash part;
//   - /nar/<hash part>-<NAR hash>.nar.zst: its NAR, compressed with zstd.
//
// A NAR URL names the NAR hash of the narinfo that gave it out, not a
// file: clients keep narinfos for weeks, while the cache behind the store
// compacts entries, evicts them and rebuilds them. So the URL works for as
// long as the path is served with that NAR hash, whatever the cache holds:
// the compacted zstd file is sent as it is stored, and a NAR still plain
// (just written, or rebuilt after an eviction) is sent as a zstd frame of
// raw blocks, which costs no CPU per request. A path whose NAR hash
// changed since is 404. For the same reason narinfos carry no FileHash or
// FileSize: the bytes at a NAR URL are not fixed (raw blocks before
// compaction, compressed after; a rebuild compressed by another version of
// the encoder may differ), and Nix checks the NAR hash, which is.
//
// Everything else is 404 (or 400 for a name of one of the forms above
// that is malformed, 405 for another method): there is no listing, and
// no URL reaches a file by name.
package httpcache
