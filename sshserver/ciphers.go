package sshserver

import (
	"fmt"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// DefaultCiphers returns the ciphers a Server offers when its Ciphers
// field is empty.
//
// A client picks the first cipher in its own list that the server offers,
// and OpenSSH lists chacha20-poly1305 first. On amd64, x/crypto/ssh
// implements that cipher with a ChaCha20 that has no assembly (about
// 0.8 GB/s here, against 5.7 GB/s for AES-GCM with AES-NI): a warm 1 GiB
// NAR took 4.5 s to copy with it, 3.5 s with AES-GCM. So on an amd64 CPU
// with AES-NI and carry-less multiply, the server offers only AES-GCM. It
// is there in every OpenSSH built with OpenSSL (all distributions' and
// Nix's), but not in one built without it, nor in Dropbear's default
// build: ParseCiphers lets an operator widen the list. Elsewhere (arm64,
// where ChaCha20 has assembly) the server keeps x/crypto/ssh's defaults.
func DefaultCiphers() []string {
	if preferGCM() {
		return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	}
	return ssh.SupportedAlgorithms().Ciphers
}

func preferGCM() bool {
	return runtime.GOARCH == "amd64" && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
}

// ParseCiphers reads a list of cipher names separated by commas or
// spaces, as for Server.Ciphers, refusing names that x/crypto/ssh does not
// implement or deems insecure.
func ParseCiphers(s string) ([]string, error) {
	supported := ssh.SupportedAlgorithms().Ciphers
	var out []string
	for _, name := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(supported, name) {
			return nil, fmt.Errorf("cipher %q is not supported (supported: %s)", name, strings.Join(supported, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}
