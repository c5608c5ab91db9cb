// Package testenv decides what a test does when a tool it needs (nix,
// OpenSSH, qemu, a cross compiler) is missing: skip on a developer's
// machine, fail in CI, where a missing tool means a broken setup that a
// skip would hide behind a green run.
package testenv
