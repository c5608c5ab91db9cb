package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// loadSecretKey reads a Nix secret key, refusing a file that others can
// read: such a key may already be in the wrong hands.
func loadSecretKey(path string) (signature.SecretKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key: %w", err)
	}
	if err := privateMode("signing key", path, st.Mode()); err != nil {
		return signature.SecretKey{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretKeyFile+1))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	if len(b) > maxSecretKeyFile {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: larger than %d bytes, not a Nix secret key", path, maxSecretKeyFile)
	}
	k, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	// A byte-order mark from an editor would end up in every signature's
	// name, which no client's trusted-public-keys matches.
	if err := checkKeyName(k.ToPublicKey().Name); err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// maxSecretKeyFile bounds a signing key file; a key is name:base64 of 64
// bytes.
const maxSecretKeyFile = 4 << 10

// checkPrivateFile refuses a key file that group or others have any
// permission on, as sshd does. A missing file passes when mayBeMissing
// (it is generated 0600 later).
func checkPrivateFile(what, path string, mayBeMissing bool) error {
	st, err := os.Stat(path)
	if err != nil {
		if mayBeMissing && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return privateMode(what, path, st.Mode())
}

func privateMode(what, path string, mode fs.FileMode) error {
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s is accessible by group or others (mode %#o); run chmod 600 %s", what, path, perm, path)
	}
	return nil
}
