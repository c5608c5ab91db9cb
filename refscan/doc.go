// Package refscan finds store path hash parts in bytes the way Nix's
// reference scanner does: any 32-byte window that equals one of a set of
// nixbase32 hash parts is a hit, wherever it is and whatever surrounds it.
//
// Index searches one buffer; a Scanner searches a stream written in pieces
// and also finds hash parts that straddle two pieces, so callers can scan
// NAR contents chunk by chunk with bounded memory.
package refscan
