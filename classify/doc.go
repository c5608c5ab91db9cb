// Package classify reads a store path's NAR once, streaming, and records
// what decides the path's platform and its leaks: the ELF machine, class
// and byte order of every regular file, the Mach-O and PE files (code for
// no Linux system, which reports name), and, per candidate store path,
// which files inside the NAR name it.
//
// Only a file's header is parsed (the first 20 bytes of an ELF file, the
// DOS and PE headers of a PE file within the first 64 KiB); the rest
// streams through a reference scanner, so memory does not grow with the
// size of the NAR.
package classify
