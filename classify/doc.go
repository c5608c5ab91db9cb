// Package classify reads a store path's NAR once, streaming, and records
// what decides the path's platform and its leaks: the ELF machine of every
// regular file and, per candidate store path, which files inside the NAR
// name it.
//
// Only the ELF header (the first 20 bytes) of a file is parsed; the rest
// streams through a reference scanner, so memory does not grow with the
// size of the NAR.
package classify
