package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// runKeygen writes a key pair in the format of
// `nix-store --generate-binary-cache-key`: "name:base64" with no newline.
func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "key name, e.g. decross-store-1")
	secretFile := fs.String("secret-key-file", "", "where to write the secret key")
	publicFile := fs.String("public-key-file", "", "where to write the public key")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || *secretFile == "" || *publicFile == "" {
		return errors.New("--name, --secret-key-file and --public-key-file are required")
	}
	if err := checkKeyName(*name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	sk, pk, err := signature.GenerateKeypair(*name, rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	// O_EXCL: overwriting a signing key by accident would orphan every
	// client that trusts it.
	if err := writeNew(*secretFile, sk.String(), 0o600); err != nil {
		return err
	}
	if err := writeNew(*publicFile, pk.String(), 0o644); err != nil {
		os.Remove(*secretFile)
		return err
	}
	fmt.Fprintln(stdout, pk.String())
	return nil
}

// writeNew creates path with content, and removes what it created if that
// fails (a full disk): an empty key file would only make the next run fail
// with "file exists".
func writeNew(path, content string, mode os.FileMode) error {
	return createWith(path, mode, func(f *os.File) error {
		_, err := f.WriteString(content)
		return err
	})
}

func createWith(path string, mode os.FileMode, write func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

// checkKeyName refuses key names that a signature cannot carry usefully:
// Nix splits "name:base64" at the first colon and trusted-public-keys at
// white space.
func checkKeyName(name string) error {
	if i := strings.IndexFunc(name, func(r rune) bool {
		return r == ':' || unicode.IsSpace(r) || !unicode.IsPrint(r)
	}); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("key name %q has %U at byte %d; Nix cannot use a key whose name holds a colon, white space or an invisible character", name, r, i)
	}
	return nil
}
