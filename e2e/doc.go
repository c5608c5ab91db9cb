// Package e2e holds end-to-end tests that run decross-store against a real
// Nix (Debian's nix-bin) and run the served programs under qemu-user:
// aarch64 in most tests, and riscv64 and armv7l too in TestTargets. Its
// helpers build the example package set in example/ for a target, start
// nix-daemon when none answers, and run a program against a private copy of
// a store mounted on /nix/store.
package e2e
