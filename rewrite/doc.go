// Package rewrite turns the NAR of a cross-built store path into the NAR of
// the native path it stands in for, by replacing every occurrence of the
// cross store paths with their native counterparts.
//
// A Rewriter streams: it parses the NAR with narstream's strict pull
// parser, keeps only bounded buffers, so memory does not grow with the size
// of the NAR, and writes the output with a matching encoder. The encoder is
// local rather than go-nix's pkg/nar Writer, which fails on valid entry
// names starting with ".." and needs a goroutine per NAR; it tracks only the
// number of open directories, so deep trees (up to narstream.MaxDepth) cost
// no more than shallow ones.
//
// # Matching
//
// Only whole cross paths match: "/nix/store/" followed by a known hash part,
// a dash and exactly the cross name. Whatever follows ("/lib/libc.so.6", a
// NUL, any byte) is left alone. Store path names cannot contain "/", so a
// cross path can never start inside another one and a left-to-right scan is
// unambiguous. Occurrences are found across read-buffer boundaries.
//
// # Same length in binaries, exact in text
//
// Native paths are never longer than cross paths ("-aarch64-unknown-linux-gnu"
// disappears from the name). How the length difference is absorbed depends
// on the file:
//
//   - Regular files are rewritten in place, keeping their length: the native
//     path is padded with extra "/" right after "/nix/store/", e.g.
//     "/nix/store/////<hash>-glibc-2.36". The kernel and ld.so resolve that
//     to the same file. Bytes after a replaced path never move, because
//     linkers merge string tails and a pointer may aim into the middle of a
//     string; shifting them would silently break such pointers.
//   - Regular files of at most Options.TextMax bytes without a NUL byte are
//     treated as text (scripts, .pc files, configs) and rewritten exactly,
//     so a shebang becomes "#!/nix/store/<hash>-bash-5.2/bin/sh" and the
//     file shrinks. A NAR carries a file's size before its contents, so
//     such files are buffered whole to learn the new size; TextMax bounds
//     that buffer. A small file with a single NUL is binary and padded, and
//     so is every larger file, whatever its contents.
//   - Symlink targets are rewritten exactly; they are short strings and
//     never contain NULs.
//
// Entry names cannot contain a store path (no "/" allowed), so they are
// never rewritten, only checked.
//
// # Leftover check
//
// After rewriting, every file's contents, every symlink target and every
// entry name of the output is scanned for forbidden hash parts: those of all
// cross paths being replaced plus any extra ones the caller names. The scan
// follows Nix's reference scanner, so any occurrence of the 32-character
// hash anywhere counts, e.g. a cross path whose name differs from the one in
// the replacement set and was therefore not rewritten. The scan is
// refscan's, the same one the classify package uses. A hit fails the
// rewrite with a *LeftoverError naming the file: serving such a NAR would
// leave a dangling reference to a path that does not exist on the client.
package rewrite
