package sshserver

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// Key files are small; the caps stop a wrong path (a log, a device) from
// being read into memory whole.
const (
	maxHostKeyFile        = 64 << 10
	maxAuthorizedKeysFile = 1 << 20
	maxAuthorizedKeysLine = 64 << 10
)

// LoadOrCreateHostKey reads an OpenSSH private key from path. If the file
// does not exist it generates an ed25519 key, creating the parent directory
// with mode 0700 and the key with mode 0600. The new key becomes visible
// under path only once fully written, and if another process creates the
// key first, that key is loaded instead of being replaced.
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	s, err := loadHostKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	if err := createHostKey(path); err != nil {
		return nil, err
	}
	return loadHostKey(path)
}

func loadHostKey(path string) (ssh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load host key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load host key: %w", err)
	}
	// Same rule as sshd: a host key others can read is already compromised.
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load host key %s: permissions %#o are too open (chmod 600)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxHostKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("load host key %s: %w", path, err)
	}
	if len(data) > maxHostKeyFile {
		return nil, fmt.Errorf("load host key %s: file larger than %d bytes", path, maxHostKeyFile)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("load host key %s: passphrase-protected keys are not supported", path)
		}
		return nil, fmt.Errorf("load host key %s: %w", path, err)
	}
	return s, nil
}

func createHostKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "decross-store host key")
	if err != nil {
		return fmt.Errorf("encode host key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create host key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".hostkey-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create host key: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create host key: %w", err)
	}
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return fmt.Errorf("write host key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write host key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write host key: %w", err)
	}
	// A hard link publishes the key without overwriting one that a
	// concurrent process may have created meanwhile; rename would let the
	// two processes end up serving different keys.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return fmt.Errorf("install host key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the new directory entry durable; best effort
		d.Close()
	}
	return nil
}

// LoadAuthorizedKeys reads public keys in OpenSSH authorized_keys format.
// Comment and blank lines are skipped. Every key is returned as an
// *AuthorizedKey carrying its line's restrictions, which Server enforces:
//
//   - from="pattern-list" limits the client addresses, with sshd's syntax
//     (addresses, CIDR networks, * and ? wildcards, ! to exclude). Only the
//     address is matched, never a host name, so host name patterns are
//     refused.
//   - expiry-time="YYYYMMDD[HHMM[SS]]" ends the key's validity. As in
//     sshd(8) the time is local, meaning the server's time zone when the
//     file is loaded; a trailing Z makes it UTC.
//   - restrict, no-pty, no-port-forwarding, no-agent-forwarding,
//     no-X11-forwarding and no-user-rc are accepted: the server never
//     grants what they take away.
//
// Any other option (command=, cert-authority, principals=, environment=,
// permitopen=, permitlisten=, tunnel=, pty, ..., or one not known) would
// grant or change something the server cannot honour, so the file is
// refused. Errors name the offending line.
func LoadAuthorizedKeys(path string) ([]ssh.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load authorized keys: %w", err)
	}
	defer f.Close()
	return parseAuthorizedKeys(io.LimitReader(f, maxAuthorizedKeysFile+1), path, time.Local)
}

// parseAuthorizedKeys parses authorized_keys text; name prefixes errors,
// compiler-style, as name:line. loc is the zone of expiry times.
func parseAuthorizedKeys(r io.Reader, name string, loc *time.Location) ([]ssh.PublicKey, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxAuthorizedKeysLine)
	var (
		keys  []ssh.PublicKey
		n     int
		total int
	)
	for sc.Scan() {
		n++
		raw := sc.Bytes()
		total += len(raw) + 1
		if total > maxAuthorizedKeysFile {
			return nil, fmt.Errorf("authorized keys %s: file larger than %d bytes", name, maxAuthorizedKeysFile)
		}
		line := bytes.TrimSpace(raw)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		// ParseAuthorizedKey skips lines it cannot parse and reports only
		// "no key found", so feed it one line and name the line ourselves.
		key, _, opts, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, fmt.Errorf("authorized keys %s:%d: not a valid public key line", name, n)
		}
		// sshd honours a certificate only through a cert-authority line,
		// checking its validity and principals; a certificate listed as a
		// plain key would skip those checks.
		if _, ok := key.(*ssh.Certificate); ok {
			return nil, fmt.Errorf("authorized keys %s:%d: %s certificates are not supported; list the plain public key", name, n, key.Type())
		}
		ak := &AuthorizedKey{PublicKey: key, Source: fmt.Sprintf("%s:%d", name, n)}
		if err := applyOptions(ak, opts, loc); err != nil {
			return nil, fmt.Errorf("authorized keys %s:%d: %w", name, n, err)
		}
		keys = append(keys, ak)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("authorized keys %s:%d: line longer than %d bytes", name, n+1, maxAuthorizedKeysLine)
		}
		return nil, fmt.Errorf("authorized keys %s: %w", name, err)
	}
	// An empty list would lock every client out without any hint why.
	if len(keys) == 0 {
		return nil, fmt.Errorf("authorized keys %s: no public keys found", name)
	}
	return keys, nil
}

// fingerprint is the form OpenSSH prints (ssh-keygen -l), so log lines can
// be matched against a user's key.
func fingerprint(k ssh.PublicKey) string {
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}
