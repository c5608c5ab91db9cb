package pathinfo

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// NarHash is the SHA-256 digest of a path's NAR serialisation. Nix has used
// SHA-256 for narHash in the daemon protocol and narinfo files since 2.0.
type NarHash [sha256.Size]byte

// Hex is the form the worker protocol uses (no "sha256:" prefix).
func (h NarHash) Hex() string { return hex.EncodeToString(h[:]) }

// String is the form fingerprints and narinfo files use.
func (h NarHash) String() string { return "sha256:" + nixbase32.EncodeToString(h[:]) }

// ParseNarHash accepts the encodings Nix accepts for a SHA-256 narHash:
// bare hex (the worker protocol), "sha256:" followed by hex or nixbase32,
// and SRI ("sha256-<base64>", what nix path-info --json prints).
func ParseNarHash(s string) (NarHash, error) {
	var h NarHash
	if sri, ok := strings.CutPrefix(s, "sha256-"); ok {
		b, err := base64.StdEncoding.DecodeString(sri)
		if err != nil || len(b) != sha256.Size {
			return h, fmt.Errorf("parse nar hash %q: not a sha256 SRI hash", s)
		}
		copy(h[:], b)
		return h, nil
	}
	body := strings.TrimPrefix(s, "sha256:")
	switch len(body) {
	case hex.EncodedLen(sha256.Size):
		if _, err := hex.Decode(h[:], []byte(body)); err != nil {
			return h, fmt.Errorf("parse nar hash %q: %w", s, err)
		}
		return h, nil
	case nixbase32.EncodedLen(sha256.Size):
		b, err := nixbase32.DecodeString(body)
		if err != nil {
			return h, fmt.Errorf("parse nar hash %q: %w", s, err)
		}
		copy(h[:], b)
		return h, nil
	}
	return h, fmt.Errorf("parse nar hash %q: not a sha256 hash in hex or nixbase32", s)
}

// PathInfo is the metadata of one valid store path. Paths are absolute
// (/nix/store/<hash>-<name>).
type PathInfo struct {
	Path             string
	Deriver          string // empty when unknown
	NarHash          NarHash
	NarSize          uint64
	References       []string // sorted, absolute; includes Path when self-referencing
	RegistrationTime int64    // unix seconds
	Ultimate         bool
	Sigs             []string // "keyname:base64"
	CA               string   // content address, empty for input-addressed paths
}

// Fingerprint is the string Nix signs: 1;path;narHash;narSize;refs.
func (p *PathInfo) Fingerprint() string {
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(p.Path)
	b.WriteString(";")
	b.WriteString(p.NarHash.String())
	b.WriteString(";")
	b.WriteString(strconv.FormatUint(p.NarSize, 10))
	b.WriteString(";")
	refs := append([]string(nil), p.References...)
	sort.Strings(refs)
	b.WriteString(strings.Join(refs, ","))
	return b.String()
}

// Sign returns the signature of p's fingerprint by key, in "name:base64" form.
func (p *PathInfo) Sign(key signature.SecretKey) (string, error) {
	sig, err := key.Sign(rand.Reader, p.Fingerprint())
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", p.Path, err)
	}
	return sig.String(), nil
}

// Clone returns a deep copy, so callers can adjust a cached value.
func (p *PathInfo) Clone() *PathInfo {
	c := *p
	c.References = append([]string(nil), p.References...)
	c.Sigs = append([]string(nil), p.Sigs...)
	return &c
}
