package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path"
	"strings"
)

// FormatError reports a file whose format records something about its own
// bytes (a checksum, a signature) that rewriting a store path inside it
// would make wrong, and that the rewriter cannot recompute. The path is not
// served rather than served broken.
type FormatError struct {
	File   string // path inside the NAR, e.g. "/share/java/foo.jar"; "" for the root
	Format string // e.g. "zip", "gzip", "tar"
	Reason string
}

func (e *FormatError) Error() string {
	file := e.File
	if file == "" {
		file = "<root>"
	}
	return fmt.Sprintf("%s: cannot rewrite a store path in this %s file: %s", file, e.Format, e.Reason)
}

// format is what the rewriter needs to know about a regular file beyond
// its bytes.
type format int

const (
	formatPlain format = iota
	// formatKeepLength files are text whose length or byte offsets are
	// recorded elsewhere: they are padded like binaries, never shrunk.
	formatKeepLength
	// formatZip files are zip archives (jar, whl, egg, apk, jmod): padded,
	// then the CRC-32 of every member whose bytes changed is recomputed.
	formatZip
	// formatTar files are tar archives: padded, then the checksum of every
	// header whose bytes changed is recomputed.
	formatTar
	// formatSealed files carry a checksum of their contents that the
	// rewriter does not recompute (compressed streams): a file of this
	// kind in which a store path was rewritten is refused.
	formatSealed
)

// sniffLen is how many leading bytes formatOf looks at.
const sniffLen = 512

// formatOf classifies a regular file by its name and its first bytes
// (up to sniffLen of them, fewer if the file is shorter).
func formatOf(name string, head []byte) (format, string) {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return formatZip, "zip"
	case bytes.HasPrefix(head, []byte("JM\x01\x00PK\x03\x04")):
		// A jmod: a zip after a four-byte header.
		return formatZip, "zip"
	case len(head) >= tarBlock && isTarHeader(head[:tarBlock]):
		return formatTar, "tar"
	case bytes.HasPrefix(head, []byte("\x1f\x8b")):
		return formatSealed, "gzip"
	case bytes.HasPrefix(head, []byte("\xfd7zXZ\x00")):
		return formatSealed, "xz"
	case bytes.HasPrefix(head, []byte("\x28\xb5\x2f\xfd")):
		return formatSealed, "zstd"
	case bytes.HasPrefix(head, []byte("\x89LZO\x00")), bytes.HasPrefix(head, []byte("\x04\x22\x4d\x18")):
		return formatSealed, "lzo or lz4"
	case bytes.HasPrefix(head, []byte("BZh")), bytes.HasPrefix(head, []byte("LZIP")):
		return formatSealed, "bzip2 or lzip"
	case bytes.HasPrefix(head, []byte("070702")):
		// cpio's "crc" format sums each member's data.
		return formatSealed, "cpio"
	case bytes.HasPrefix(head, []byte("\xed\xab\xee\xdb")):
		// An RPM's signature header holds digests of the rest.
		return formatSealed, "rpm"
	}
	if keepsLength(name) {
		return formatKeepLength, "text"
	}
	return formatPlain, ""
}

// keepsLength reports whether a file of this name is text whose length or
// byte offsets are recorded, by itself or by a sibling:
//   - Python sources: the .pyc caches next to them record the source size
//     (and mtime, fixed in a NAR); a source of another size makes every
//     start recompile it, and a read-only store cannot keep the result.
//   - Emacs byte code (.elc): docstrings are loaded lazily from byte
//     offsets into the file, "(#$ . N)", and "#@N" skips N bytes.
//   - GNU info files (.info, .info-N): the tag table holds the byte offset
//     of every node.
func keepsLength(name string) bool {
	switch path.Ext(name) {
	case ".py", ".pyi", ".pyw", ".elc", ".info":
		return true
	}
	// foo.info-1, foo.info-12
	i := strings.LastIndex(name, ".info-")
	if i < 0 {
		return false
	}
	n := name[i+len(".info-"):]
	return n != "" && strings.Trim(n, "0123456789") == ""
}

const tarBlock = 512

// isTarHeader reports whether h (512 bytes) is a tar header: a ustar or GNU
// magic and a checksum that matches, as tar itself checks.
func isTarHeader(h []byte) bool {
	magic := string(h[257:265])
	if magic != "ustar\x0000" && magic != "ustar  \x00" {
		return false
	}
	sum, ok := parseOctal(h[148:156])
	return ok && sum == tarChecksum(h)
}

// tarChecksum is the sum of the header's bytes with the checksum field
// counted as spaces.
func tarChecksum(h []byte) int64 {
	var s int64
	for i, c := range h[:tarBlock] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		s += int64(c)
	}
	return s
}

// parseOctal reads a NUL- or space-terminated octal field; the base-256
// form (high bit set) is read too, for sizes over 8 GiB.
func parseOctal(f []byte) (int64, bool) {
	if len(f) > 0 && f[0]&0x80 != 0 {
		if len(f) < 9 || f[0] != 0x80 {
			return 0, false
		}
		for _, c := range f[1 : len(f)-8] {
			if c != 0 {
				return 0, false
			}
		}
		v := binary.BigEndian.Uint64(f[len(f)-8:])
		if v>>62 != 0 {
			return 0, false
		}
		return int64(v), true
	}
	s := strings.Trim(string(f), " \x00")
	if s == "" {
		return 0, false
	}
	var v int64
	for _, c := range []byte(s) {
		if c < '0' || c > '7' || v > 1<<55 {
			return 0, false
		}
		v = v*8 + int64(c-'0')
	}
	return v, true
}
