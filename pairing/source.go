package pairing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/upstream"
)

// DrvSource reads derivations by .drv path. Implementations must be safe
// for concurrent use: LoadGraph reads several at once.
type DrvSource interface {
	ReadDerivation(ctx context.Context, drvPath string) (*derivation.Derivation, error)
}

// StoreSource reads derivations through Store.NarFromPath, which works for
// any daemon but costs a connection (a forked worker) per derivation.
type StoreSource struct {
	Store upstream.Reader
}

// ReadDerivation reads drvPath as a NAR from the store.
func (s StoreSource) ReadDerivation(ctx context.Context, drvPath string) (*derivation.Derivation, error) {
	return ReadDerivation(ctx, s.Store, drvPath)
}

// DirSource reads .drv files from Dir, the directory that holds the
// store's files: /nix/store for the local store, or a copy of it. A file
// is used only when its content hashes to its path, as Nix computes a .drv
// path, so a stale, partial or foreign file cannot stand in for the
// derivation. Otherwise, and when the file is missing or unreadable, the
// derivation is read through Fallback; with no Fallback that is an error.
type DirSource struct {
	Dir      string
	Fallback DrvSource
}

// ReadDerivation reads drvPath from Dir, or through Fallback.
func (s DirSource) ReadDerivation(ctx context.Context, drvPath string) (*derivation.Derivation, error) {
	sp, err := checkDrvPath(drvPath)
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	d, localErr := readDrvFile(filepath.Join(s.Dir, sp.String()), drvPath)
	if localErr == nil {
		return d, nil
	}
	if s.Fallback == nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, localErr)
	}
	d, err = s.Fallback.ReadDerivation(ctx, drvPath)
	if err != nil {
		if errors.Is(localErr, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (the file in %s was not used: %v)", err, s.Dir, localErr)
	}
	return d, nil
}

func checkDrvPath(drvPath string) (*storepath.StorePath, error) {
	if !strings.HasSuffix(drvPath, ".drv") {
		return nil, errors.New("not a .drv path")
	}
	sp, err := storepath.FromAbsolutePath(drvPath)
	if err != nil {
		return nil, err
	}
	// FromAbsolutePath cleans its argument first; only the plain form names
	// the file that is read.
	if sp.Absolute() != drvPath {
		return nil, errors.New("not a plain store path")
	}
	return sp, nil
}

// readDrvFile reads, parses and verifies the file name holding drvPath.
func readDrvFile(name, drvPath string) (*derivation.Derivation, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One read of the right size for the common case; the limit guards
	// against a file that grows or lies about its size.
	var size int64
	if fi, err := f.Stat(); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", name)
		}
		size = fi.Size()
	}
	if size > MaxDrvSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed for a derivation", name, size, MaxDrvSize)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+1))
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxDrvSize+1)); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if len(b) > MaxDrvSize {
		return nil, fmt.Errorf("%s: more than the %d bytes allowed for a derivation", name, MaxDrvSize)
	}
	d, err := derivation.ReadDerivation(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	if got := drvPathOf(d, b); got != drvPath {
		return nil, fmt.Errorf("%s hashes to %s", name, got)
	}
	return d, nil
}

// drvPathOf is the store path Nix gives a .drv file with content b: a
// text path whose references are the input derivations and sources. It
// hashes the bytes as they are rather than d re-encoded, so that it names
// exactly this file.
func drvPathOf(d *derivation.Derivation, b []byte) string {
	refs := make([]string, 0, len(d.InputDerivations)+len(d.InputSources))
	for in := range d.InputDerivations {
		refs = append(refs, in)
	}
	refs = append(refs, d.InputSources...)
	sort.Strings(refs)
	content := sha256.Sum256(b)
	h := sha256.New()
	io.WriteString(h, "text:")
	for _, r := range refs {
		io.WriteString(h, r)
		io.WriteString(h, ":")
	}
	io.WriteString(h, "sha256:")
	io.WriteString(h, hex.EncodeToString(content[:]))
	io.WriteString(h, ":"+storepath.StoreDir+":"+d.Name()+".drv")
	sp := storepath.StorePath{Name: d.Name() + ".drv", Digest: nixhash.CompressHash(h.Sum(nil), 20)}
	return sp.Absolute()
}
