// Package narstream reads Nix archives (NARs) strictly and in a streaming
// fashion: Next returns one node header at a time and Read the contents of
// the current regular file, so memory does not grow with the size of the
// NAR.
//
// It accepts exactly the NARs that Nix itself writes: the magic, node types
// and keywords must be spelled exactly, padding must be zero, entries must be
// sorted and unique, names must be valid file names, and a NAR cut off
// anywhere, including at a token boundary, is an error. Accepted NARs
// re-encode to the same bytes. Every length read from the input is bounded
// before anything is allocated, and directories may nest at most MaxDepth
// levels.
//
// go-nix's pkg/nar Reader is more lenient (it accepts non-zero padding and
// some truncated NARs), keeps reading its source from a goroutine after
// Close, and allocates per token; FuzzReader holds this Reader to it as an
// oracle for the NARs both accept.
//
// A Reader consumes exactly the bytes of one NAR and nothing after it, so a
// NAR embedded in a larger stream (the nix-daemon protocol) can be read in
// place without buffering ahead.
package narstream
