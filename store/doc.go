// Package store answers for native store paths with rewritten cross-built
// artifacts. It is the store the protocol server serves from.
//
// A path is served when it is
//   - a native path in the mapping: its cross path is read from the
//     upstream store, rewritten so that every mapped cross path inside it
//     names its native path, and re-hashed and signed; or
//   - a content-addressed path (path info with a ca field) in the runtime
//     closure of a mapped cross path: it is the same on both sides and is
//     served unchanged.
//
// A mapped path is served only when its whole cross closure is: every
// path in it mapped or content-addressed, every content-addressed path
// referring only to content-addressed paths, and no native path longer
// than its cross path (binaries could not be rewritten in place). Anything
// else is an error that names the native path, the cross path and the
// offending reference.
//
// The first request for a path rewrites it once (concurrent requests share
// that work) into the NAR cache; later requests, also after a restart, are
// served from the cache. Every check that can fail runs before a NAR is
// handed out, because the worker protocol cannot report an error once a
// NAR has started.
package store
