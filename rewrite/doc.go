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
//     treated as text (scripts, .pc files, .la files, Perl .packlist,
//     configs) and rewritten exactly, so a shebang becomes
//     "#!/nix/store/<hash>-bash-5.2/bin/sh" and the file shrinks. A NAR
//     carries a file's size before its contents, so such files are buffered
//     whole to learn the new size; TextMax bounds that buffer (and the copy
//     of the input a small archive's fix needs). A small file with a single
//     NUL is binary and padded, and so is every larger file, whatever its
//     contents.
//   - Symlink targets are rewritten exactly; they are short strings and
//     never contain NULs.
//
// Entry names cannot contain a store path (no "/" allowed), so they are
// never rewritten, only checked.
//
// # Formats that record their own lengths or checksums
//
// Padding keeps every length and offset, so ELF files, static archives
// (.a: member sizes in the headers), Java .class files (length-prefixed
// constant pool strings), Python .pyc files (they hold NULs: padded, same
// length) and other binaries stay valid. Some formats record more, and are
// recognised by name or by their first bytes (sniffLen of them), never by
// a guess that could differ between two runs:
//
//   - Text whose length or byte offsets are recorded is padded, not shrunk,
//     even when small: Python sources (.py, .pyi, .pyw), whose .pyc caches
//     record the source size (a changed size makes every start recompile
//     the source, and a read-only store cannot keep the result); Emacs byte
//     code (.elc), whose docstrings are loaded from byte offsets "(#$ . N)"
//     and skipped with "#@N"; GNU info files (.info, .info-N), whose tag
//     table holds the byte offset of every node. A hash-based .pyc that
//     checks its source (PEP 552) records a hash of the source, which any
//     change breaks; Python then compiles the source in memory at each
//     start, correctly but slowly; it is not fixable in a stream, since
//     __pycache__ sorts before most sources.
//   - Zip archives (jar, whl, egg, apk; "PK\x03\x04" at the start, or after a
//     jmod's four-byte header; in a file of at most TextMax bytes, also a
//     zip end record at the end, as self-extractors have): padded, then every
//     member whose bytes changed gets its CRC-32 recomputed in its local
//     header, its central directory entry and its data descriptor (flag
//     bit 3, with or without signature); zip64 sizes and offsets are read.
//     A stored member's CRC is computed over its rewritten bytes. A store
//     path showing in compressed bytes (a stored deflate block) is
//     refused: later blocks may copy from it, so padding it could change
//     what they decompress to under a recomputed CRC. A path hidden by
//     compression is not seen, by this rewriter or by Nix's reference
//     scanner, and is left as it is. The input CRC of a changed member
//     must match its data: a broken input is not silently made to look
//     whole. Refused, with a *FormatError: a changed member that is
//     encrypted or compressed with another method, a changed member in a
//     signed jar (META-INF/*.SF, .RSA, .DSA, .EC) or in an APK with a
//     signing block, a store path that reaches into a header, descriptor,
//     extra field or end record, members that overlap, and a zip appended
//     to a file larger than TextMax when a path changed inside it (the
//     start of such a file has been written before its end shows it is an
//     archive). An archive in which no store path changed passes unchanged,
//     whatever its state.
//   - Tar archives (a ustar or GNU header at the start): padded, then the
//     checksum of every header whose name, link target or prefix changed is
//     recomputed; pax headers (and the sizes they set) are read. A store
//     path that reaches into another header field is refused. ustar may
//     split a long name between its prefix and name fields inside a store
//     path: the path is then not seen whole, not rewritten, and the
//     leftover check refuses the file. Pre-POSIX (v7) tars, which have no
//     magic, are not recognised.
//   - Archives stored inside archives (a jar in a fat jar or in a tar, a
//     gzip stream stored in a jar) are fixed, or refused naming the member,
//     before the checksum of the archive around them is computed, up to
//     maxNesting deep.
//   - Compressed streams and formats with digests over their data (gzip,
//     xz, zstd, bzip2, lzip, lzo, lz4, cpio's crc format, rpm): a store path
//     visible in their bytes, and so rewritten, would break a checksum the
//     rewriter does not recompute, so such a file is refused; one without a
//     visible path passes unchanged.
//
// Zip and tar archives larger than TextMax cannot be patched in the stream,
// as their checksums precede (tar: sit in) the data they cover: the input
// and its padded rewrite are spooled to an unlinked temporary file under
// Options.TempDir (twice the archive's size on disk, a few fixed buffers in
// memory), fixed there, then written out.
//
// Not handled: a zip embedded in the middle of a larger file, which is not
// recognised; .dist-info/RECORD files, whose hashes and sizes of installed
// files only pip's uninstall reads; ELF .gnu_debuglink sections, which hold
// the CRC of a separate debug file.
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
// A *FormatError, likewise, means the NAR is not served.
package rewrite
