package binarycache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/pathinfo"
)

// checkCA returns nil when info.CA, a content address from a narinfo,
// gives info.Path, and else an error saying why not. A narinfo's signature
// covers the path, NarHash, NarSize and references but not CA, so a CA
// field is only believed once the store path recomputed from it (and from
// the name and references) is the path itself, as Nix does
// (ValidPathInfo::isContentAddressed in libstore/path-info.cc).
//
// The forms are those of Nix's content-address.cc: text:sha256:<hash>,
// fixed:r:<algo>:<hash> (NAR serialisation) and fixed:<algo>:<hash> (flat
// file), with the hash in any encoding Nix parses.
func checkCA(info *pathinfo.PathInfo) error {
	sp, err := storepath.FromAbsolutePath(info.Path)
	if err != nil {
		return fmt.Errorf("content address %q: %w", info.CA, err)
	}
	method, rest, _ := strings.Cut(info.CA, ":")
	var want string
	switch method {
	case "text":
		h, err := nixhash.ParseAny(rest, nil)
		if err != nil {
			return fmt.Errorf("content address %q: %w", info.CA, err)
		}
		if h.Algo() != nixhash.SHA256 {
			return fmt.Errorf("content address %q: a text hash must be sha256", info.CA)
		}
		// A text path cannot refer to itself: a self-reference stays in
		// the type and the paths differ.
		want = makeStorePath(makeType("text", info.References), h.Digest(), sp.Name)
	case "fixed":
		rest, recursive := strings.CutPrefix(rest, "r:")
		h, err := nixhash.ParseAny(rest, nil)
		if err != nil {
			return fmt.Errorf("content address %q: %w", info.CA, err)
		}
		if recursive && h.Algo() == nixhash.SHA256 {
			refs := slices.DeleteFunc(slices.Clone(info.References), func(r string) bool { return r == info.Path })
			typ := makeType("source", refs)
			if len(refs) != len(info.References) {
				typ += ":self"
			}
			want = makeStorePath(typ, h.Digest(), sp.Name)
			break
		}
		if len(info.References) > 0 {
			return fmt.Errorf("content address %q: a fixed-output path of this kind has no references, this one has %d", info.CA, len(info.References))
		}
		prefix := ""
		if recursive {
			prefix = "r:"
		}
		inner := sha256.Sum256([]byte("fixed:out:" + prefix + h.Algo().String() + ":" + hex.EncodeToString(h.Digest()) + ":"))
		want = makeStorePath("output:out", inner[:], sp.Name)
	default:
		return fmt.Errorf("content address %q: unknown method %q", info.CA, method)
	}
	if want != info.Path {
		return fmt.Errorf("content address %q with %d references gives %s, not %s", info.CA, len(info.References), want, info.Path)
	}
	return nil
}

// makeType is Nix's Store::makeType without the self-reference: typ and
// the references, sorted as store path sets are, joined by ":".
func makeType(typ string, refs []string) string {
	refs = slices.Clone(refs)
	slices.Sort(refs)
	for _, r := range refs {
		typ += ":" + r
	}
	return typ
}

// makeStorePath is Nix's Store::makeStorePath for a sha256 digest.
func makeStorePath(typ string, digest []byte, name string) string {
	s := typ + ":sha256:" + hex.EncodeToString(digest) + ":" + storepath.StoreDir + ":" + name
	h := sha256.Sum256([]byte(s))
	return storepath.StoreDir + "/" + nixbase32.EncodeToString(nixhash.CompressHash(h[:], storepath.PathHashSize)) + "-" + name
}
