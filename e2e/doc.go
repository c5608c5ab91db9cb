// Package e2e holds end-to-end tests that run decross-store against a real
// Nix (Debian's nix-bin) and run the served aarch64 programs under
// qemu-aarch64. Its helpers build the example package set in example/,
// start nix-daemon when none answers, and run a program against a private
// copy of a store mounted on /nix/store.
package e2e
