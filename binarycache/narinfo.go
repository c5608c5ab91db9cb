package binarycache

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/upstream"
)

// MaxNarInfoSize bounds a narinfo file. The largest real ones (paths with
// thousands of references) are tens of KiB.
const MaxNarInfoSize = 1 << 20

// ErrUntrusted is wrapped by the error for a narinfo that no trusted
// public key has signed. The message names the path and the keys that did
// sign it. It matches upstream.ErrUnusable.
var ErrUntrusted error = &unusableError{"no trusted signature"}

// ErrCorrupt is wrapped by the error for a NAR whose bytes do not match
// its narinfo (NarHash, NarSize, FileHash or FileSize), and for a narinfo
// that cannot be used. It matches upstream.ErrUnusable.
var ErrCorrupt error = &unusableError{"binary cache content does not match its narinfo"}

// unusableError is a sentinel that also matches upstream.ErrUnusable: the
// path is in the cache, but must not be used, which the store reports as
// a path it does not serve rather than as a failing upstream.
type unusableError struct{ msg string }

func (e *unusableError) Error() string        { return e.msg }
func (e *unusableError) Is(target error) bool { return target == upstream.ErrUnusable }

// knownFields are the narinfo fields go-nix's parser knows. Nix ignores
// fields it does not know, so that caches can add some; so does this
// package, instead of refusing the file as go-nix would.
var knownFields = []string{
	"StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash",
	"NarSize", "References", "Deriver", "System", "Sig", "CA",
}

// compressions are the values of Compression that NarFromPath reads.
var compressions = []string{"none", "xz", "zstd", "bzip2", "br", "gzip"}

// parseNarInfo parses and checks a narinfo file: the fields a PathInfo
// needs are there and well-formed, URL stays inside the cache, and the
// compression is one this package reads.
func parseNarInfo(data []byte) (*narinfo.NarInfo, error) {
	if len(data) > MaxNarInfoSize {
		return nil, fmt.Errorf("narinfo is larger than %d bytes", MaxNarInfoSize)
	}
	var kept bytes.Buffer
	kept.Grow(len(data))
	for line := range bytes.Lines(data) {
		key, _, ok := bytes.Cut(line, []byte(": "))
		if ok && !slices.Contains(knownFields, string(key)) {
			continue
		}
		kept.Write(line)
	}
	ni, err := narinfo.Parse(&kept)
	if err != nil {
		return nil, fmt.Errorf("parse narinfo: %w", err)
	}
	if err := ni.Check(); err != nil {
		return nil, fmt.Errorf("parse narinfo: %w", err)
	}
	if ni.NarHash == nil {
		return nil, errors.New("parse narinfo: no NarHash")
	}
	if ni.NarHash.Algo() != nixhash.SHA256 {
		return nil, fmt.Errorf("parse narinfo: NarHash is %s, want sha256", ni.NarHash.Algo())
	}
	if ni.FileHash != nil && ni.FileHash.Algo() != nixhash.SHA256 {
		return nil, fmt.Errorf("parse narinfo: FileHash is %s, want sha256", ni.FileHash.Algo())
	}
	if ni.NarSize == 0 {
		return nil, errors.New("parse narinfo: no NarSize")
	}
	if err := checkNarURL(ni.URL); err != nil {
		return nil, fmt.Errorf("parse narinfo: %w", err)
	}
	if !slices.Contains(compressions, ni.Compression) {
		return nil, fmt.Errorf("parse narinfo: compression %q is not supported (supported: %s)", ni.Compression, strings.Join(compressions, ", "))
	}
	return ni, nil
}

// checkNarURL accepts a URL relative to the cache root that stays inside
// it: no scheme or host, no absolute path, no "." or ".." segment, and none
// of the characters that would change its meaning once joined to the root.
func checkNarURL(s string) error {
	if s == "" {
		return errors.New("no URL")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("?#%\\", r) {
			return fmt.Errorf("URL %q: character %q is not allowed", s, r)
		}
	}
	if u, err := url.Parse(s); err != nil || u.Scheme != "" || u.Host != "" || strings.HasPrefix(s, "/") {
		return fmt.Errorf("URL %q: only a path relative to the cache is allowed", s)
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("URL %q: empty, \".\" and \"..\" path segments are not allowed", s)
		}
	}
	return nil
}

// toPathInfo is the PathInfo a narinfo describes. Its references and
// deriver are base names there.
func toPathInfo(ni *narinfo.NarInfo) *pathinfo.PathInfo {
	info := &pathinfo.PathInfo{
		Path:    ni.StorePath,
		NarSize: ni.NarSize,
		CA:      ni.CA,
	}
	copy(info.NarHash[:], ni.NarHash.Digest())
	for _, r := range ni.References {
		info.References = append(info.References, storepath.StoreDir+"/"+r)
	}
	sort.Strings(info.References)
	if ni.Deriver != "" {
		info.Deriver = storepath.StoreDir + "/" + ni.Deriver
	}
	for _, s := range ni.Signatures {
		info.Sigs = append(info.Sigs, s.String())
	}
	return info
}

// checkSigs returns nil when a key in keys verifies one of sigs over
// info's fingerprint, and else an error wrapping ErrUntrusted that names
// the signers.
func checkSigs(info *pathinfo.PathInfo, sigs []signature.Signature, keys []signature.PublicKey) error {
	fp := []byte(info.Fingerprint())
	var signers, bad []string
	for _, s := range sigs {
		for _, k := range keys {
			if k.Name != s.Name {
				continue
			}
			if ed25519.Verify(k.Data, fp, s.Data) {
				return nil
			}
			bad = append(bad, s.Name)
		}
		if !slices.Contains(signers, s.Name) {
			signers = append(signers, s.Name)
		}
	}
	trusted := make([]string, len(keys))
	for i, k := range keys {
		trusted[i] = k.Name
	}
	var why string
	switch {
	case len(signers) == 0:
		why = "it is not signed"
	case len(bad) > 0:
		why = fmt.Sprintf("signed by %s, but the signature of %s does not verify (the narinfo was changed after signing, or the key is another one of that name)",
			strings.Join(signers, ", "), strings.Join(bad, ", "))
	default:
		why = "signed only by " + strings.Join(signers, ", ")
	}
	return fmt.Errorf("%w for %s: %s; trusted keys: %s", ErrUntrusted, info.Path, why, strings.Join(trusted, ", "))
}
