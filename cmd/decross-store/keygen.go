package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

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

func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return f.Close()
}
