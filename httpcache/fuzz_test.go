package httpcache

import (
	"bytes"
	"flag"
	"net/http"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/internal/fuzzseed"
	"github.com/decross-store/decross-store/pathinfo"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz seed files")

const (
	seedHash    = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
	seedNarHash = "0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch"
)

// routeSeeds are requests as "METHOD path": what Nix asks for, and what
// a stray or hostile client might.
func routeSeeds() map[string][]byte {
	return map[string][]byte{
		"cache-info":      []byte("GET /nix-cache-info"),
		"narinfo":         []byte("GET /" + seedHash + ".narinfo"),
		"narinfo-head":    []byte("HEAD /" + seedHash + ".narinfo"),
		"nar":             []byte("GET /nar/" + seedHash + "-" + seedNarHash + ".nar.zst"),
		"nar-xz":          []byte("GET /nar/" + seedHash + "-" + seedNarHash + ".nar.xz"),
		"nar-high-bits":   []byte("GET /nar/" + seedHash + "-z" + seedNarHash[1:] + ".nar.zst"),
		"narinfo-short":   []byte("GET /0a0a.narinfo"),
		"narinfo-letters": []byte("GET /eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo"),
		"narinfo-nested":  []byte("GET /nar/" + seedHash + ".narinfo"),
		"dotdot":          []byte("GET /nar/../nix-cache-info"),
		"traversal":       []byte("GET /../../etc/passwd"),
		"root":            []byte("GET /"),
		"listing":         []byte("GET /nar/"),
		"ls":              []byte("GET /" + seedHash + ".ls"),
		"put":             []byte("PUT /" + seedHash + ".narinfo"),
		"empty":           {},
	}
}

// FuzzRoute feeds arbitrary methods and paths to the router. It must not
// panic, must answer a status of its own set, and whatever it accepts must
// be exactly one of the URL forms, spelled the one way the cache writes it.
func FuzzRoute(f *testing.F) {
	for _, s := range routeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		method, path, _ := strings.Cut(string(data), " ")
		req, status, reason := route(method, path)
		switch status {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
			if reason == "" {
				t.Fatalf("route(%q, %q) = %d without a reason", method, path, status)
			}
			return
		default:
			t.Fatalf("route(%q, %q) = status %d", method, path, status)
		}
		if method != http.MethodGet && method != http.MethodHead {
			t.Fatalf("route accepted method %q", method)
		}
		var want string
		switch req.kind {
		case kindCacheInfo:
			want = "/nix-cache-info"
		case kindNarInfo:
			want = "/" + req.hashPart + ".narinfo"
		case kindNar:
			want = "/" + narURL(req.hashPart, req.narHash)
		default:
			t.Fatalf("route(%q, %q) = 200 with kind %d", method, path, req.kind)
		}
		if path != want {
			t.Fatalf("route accepted %q as %q", path, want)
		}
		if req.kind != kindCacheInfo && !isHashPart(req.hashPart) {
			t.Fatalf("route accepted hash part %q", req.hashPart)
		}
		if strings.Contains(path, "..") || strings.Count(path, "/") > 2 {
			t.Fatalf("route accepted %q", path)
		}
	})
}

func TestFuzzSeeds(t *testing.T) {
	seeds := routeSeeds()
	for name, want := range map[string]int{"cache-info": 200, "narinfo": 200, "narinfo-head": 200, "nar": 200, "nar-xz": 400, "nar-high-bits": 400, "narinfo-short": 400, "put": 405, "traversal": 404} {
		method, path, _ := strings.Cut(string(seeds[name]), " ")
		if _, status, _ := route(method, path); status != want {
			t.Errorf("seed %s: status %d, want %d", name, status, want)
		}
	}
	h, _ := pathinfo.ParseNarHash("sha256:" + seedNarHash)
	if got := narURL(seedHash, h); !bytes.Contains(seeds["nar"], []byte(got)) {
		t.Errorf("narURL = %q, not the seed's", got)
	}
	fuzzseed.Check(t, "FuzzRoute", seeds, *update, "go test ./httpcache -run TestFuzzSeeds -update")
}
