// Package platform knows the Nix systems decross-store maps between: for
// each system double ("aarch64-linux") the ELF machine, class and byte order
// of its code, and the host configs nixpkgs appends to the names of
// packages built for it ("aarch64-unknown-linux-gnu", and the musl one).
//
// The values follow nixpkgs' lib/systems/examples.nix (configs) and
// pkgs/top-level/stage.nix's makeMuslParsedPlatform (their musl
// counterparts), and debug/elf (machines). armv6l and armv7l share one ELF
// identity (EM_ARM, 32-bit, little-endian): ELF headers do not tell them
// apart.
package platform
