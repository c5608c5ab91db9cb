package httpcache

import (
	"net/http"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/decross-store/decross-store/pathinfo"
)

// kind is what a request asks for.
type kind int

const (
	kindCacheInfo kind = iota + 1
	kindNarInfo
	kindNar
)

// hashPartLen is the length of a store path's hash part.
const hashPartLen = 32

// narHashLen is the length of a SHA-256 NAR hash in nixbase32.
var narHashLen = nixbase32.EncodedLen(len(pathinfo.NarHash{}))

const (
	narInfoSuffix = ".narinfo"
	narPrefix     = "/nar/"
	narSuffix     = ".nar.zst"
)

// request is a parsed request URL.
type request struct {
	kind     kind
	hashPart string           // kindNarInfo, kindNar
	narHash  pathinfo.NarHash // kindNar
}

// route parses a request's method and URL path. A status other than 200
// means the request is answered with that status and reason and goes no
// further.
func route(method, path string) (request, int, string) {
	if method != http.MethodGet && method != http.MethodHead {
		return request{}, http.StatusMethodNotAllowed, "only GET and HEAD are served"
	}
	switch {
	case path == "/nix-cache-info":
		return request{kind: kindCacheInfo}, http.StatusOK, ""
	case strings.HasPrefix(path, narPrefix):
		name := path[len(narPrefix):]
		hash, narHash, ok := parseNarName(name)
		if !ok {
			return request{}, http.StatusBadRequest, "malformed NAR name: want nar/<hash part>-<NAR hash in nixbase32>" + narSuffix
		}
		return request{kind: kindNar, hashPart: hash, narHash: narHash}, http.StatusOK, ""
	case strings.HasSuffix(path, narInfoSuffix) && strings.LastIndexByte(path, '/') == 0:
		hash := path[1 : len(path)-len(narInfoSuffix)]
		if !isHashPart(hash) {
			return request{}, http.StatusBadRequest, "malformed narinfo name: want <32-character hash part>" + narInfoSuffix
		}
		return request{kind: kindNarInfo, hashPart: hash}, http.StatusOK, ""
	}
	return request{}, http.StatusNotFound, "no such file"
}

// parseNarName parses "<hash part>-<NAR hash>.nar.zst".
func parseNarName(name string) (hashPart string, narHash pathinfo.NarHash, ok bool) {
	base, found := strings.CutSuffix(name, narSuffix)
	if !found || len(base) != hashPartLen+1+narHashLen || base[hashPartLen] != '-' {
		return "", narHash, false
	}
	hashPart, encoded := base[:hashPartLen], base[hashPartLen+1:]
	if !isHashPart(hashPart) {
		return "", narHash, false
	}
	b, err := nixbase32.DecodeString(encoded)
	if err != nil || len(b) != len(narHash) {
		return "", narHash, false
	}
	copy(narHash[:], b)
	// One spelling per hash: spare high bits in the first character
	// would give several URLs for one NAR.
	if nixbase32.EncodeToString(narHash[:]) != encoded {
		return "", narHash, false
	}
	return hashPart, narHash, true
}

// isHashPart tells whether s is a store path's hash part: 32 nixbase32
// characters.
func isHashPart(s string) bool {
	if len(s) != hashPartLen {
		return false
	}
	for i := range len(s) {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// narURL is the URL, relative to the cache root, of the NAR of the path
// with hashPart whose NAR hash is narHash.
func narURL(hashPart string, narHash pathinfo.NarHash) string {
	return narPrefix[1:] + hashPart + "-" + nixbase32.EncodeToString(narHash[:]) + narSuffix
}
