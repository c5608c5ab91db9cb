package binarycache

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/internal/testenv"
	"github.com/decross-store/decross-store/pathinfo"
)

// nixPathInfo is the part of `nix path-info --json` that checkCA reads.
type nixPathInfo struct {
	Path       string   `json:"path"`
	References []string `json:"references"`
	CA         string   `json:"ca"`
}

// nixCAPaths adds content-addressed paths of every kind Nix 2.8 makes to a
// store under a temporary root with the real nix tools, and returns what
// nix path-info says of them.
func nixCAPaths(t *testing.T) []nixPathInfo {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "no %s: apt-get install nix-bin", tool)
		}
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "root")
	write(t, filepath.Join(dir, "in", "f.txt"), []byte("a flat file\n"))
	write(t, filepath.Join(dir, "in", "d", "a"), []byte("a file in a directory\n"))
	run := func(name string, args ...string) string {
		t.Helper()
		var stderr bytes.Buffer
		cmd := exec.Command(name, append([]string{"--store", store}, args...)...)
		cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command\nsandbox = false\nsubstituters =", "NIX_REMOTE=")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
		}
		return string(out)
	}
	var paths []string
	add := func(out string) {
		for _, p := range strings.Fields(out) {
			paths = append(paths, strings.Trim(p, `"`))
		}
	}
	in := filepath.Join(dir, "in")
	add(run("nix-store", "--add", in+"/f.txt", in+"/d"))                   // fixed:r:sha256
	add(run("nix-store", "--add-fixed", "sha256", in+"/f.txt"))            // fixed:sha256
	add(run("nix-store", "--add-fixed", "sha1", in+"/f.txt"))              // fixed:sha1
	add(run("nix-store", "--add-fixed", "--recursive", "sha1", in+"/d"))   // fixed:r:sha1
	add(run("nix-store", "--add-fixed", "--recursive", "sha512", in+"/d")) // fixed:r:sha512
	// text, without and with references.
	add(run("nix-instantiate", "--read-write-mode", "--eval", "-E", `
		let z = builtins.toFile "z" "Z"; a = builtins.toFile "a" "A";
		in builtins.toFile "both" "uses ${z} and ${a}"`))
	add(run("nix-instantiate", "--read-write-mode", "--eval", "-E", `builtins.path { path = `+in+`/d; name = "via-builtins-path"; }`))
	var infos []nixPathInfo
	if err := json.Unmarshal([]byte(run("nix", append([]string{"path-info", "--json", "--recursive"}, paths...)...)), &infos); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, i := range infos {
		kind, _, _ := strings.Cut(strings.TrimPrefix(i.CA, "fixed:r:"), ":")
		if strings.HasPrefix(i.CA, "fixed:r:") {
			kind = "r:" + kind
		}
		kinds[kind+"/"+map[bool]string{false: "norefs", true: "refs"}[len(i.References) > 0]] = true
	}
	for _, want := range []string{"r:sha256/norefs", "fixed/norefs", "r:sha1/norefs", "r:sha512/norefs", "text/norefs", "text/refs"} {
		if !kinds[want] {
			t.Fatalf("nix made no path of kind %s: %+v", want, infos)
		}
	}
	return infos
}

func TestCAFromNix(t *testing.T) {
	for _, ni := range nixCAPaths(t) {
		t.Run(ni.Path[44:]+" "+ni.CA, func(t *testing.T) {
			// Nix sorts the references into the type; the caller need not.
			info := &pathinfo.PathInfo{Path: ni.Path, References: slices.Clone(ni.References), CA: ni.CA}
			slices.Reverse(info.References)
			if err := checkCA(info); err != nil {
				t.Fatalf("%s: %v", ni.Path, err)
			}
			// What a narinfo editor could change: the name under the
			// same hash, a reference added, the hash changed.
			forged := []pathinfo.PathInfo{
				{Path: ni.Path + "x", References: ni.References, CA: ni.CA},
				{Path: ni.Path, References: append([]string{depPath}, ni.References...), CA: ni.CA},
				{Path: ni.Path, References: ni.References, CA: ni.CA[:len(ni.CA)-1] + "0"},
			}
			if len(ni.References) > 0 {
				forged = append(forged, pathinfo.PathInfo{Path: ni.Path, CA: ni.CA})
			}
			if strings.HasPrefix(ni.CA, "fixed:r:") {
				forged = append(forged, pathinfo.PathInfo{Path: ni.Path, References: ni.References, CA: "fixed:" + strings.TrimPrefix(ni.CA, "fixed:r:")})
			}
			for _, f := range forged {
				if checkCA(&f) == nil {
					t.Errorf("forged %+v: accepted", f)
				}
			}
		})
	}
}

func TestCheckCA(t *testing.T) {
	tests := []struct {
		name    string
		info    pathinfo.PathInfo
		wantErr string // "" = valid
	}{
		{"nix-store --add", pathinfo.PathInfo{Path: caPath, CA: caPathCA}, ""},
		// A narinfo written by nix copy in the e2e tests.
		{"e2e narinfo", pathinfo.PathInfo{Path: "/nix/store/y1x2prjycmsd96d80g87a1zyfaf139k6-f.txt", CA: "fixed:r:sha256:0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch"}, ""},
		{"base16 hash", pathinfo.PathInfo{Path: caPath, CA: "fixed:r:sha256:0c83b70c88f8de32f686bec256bf238b594ada000362b416224e810662efa1c2"}, ""},
		{"input-addressed path", pathinfo.PathInfo{Path: depPath, CA: caPathCA}, "gives " + caPath + ", not " + depPath},
		{"self reference", pathinfo.PathInfo{Path: caPath, References: []string{caPath}, CA: caPathCA}, "with 1 references gives"},
		{"unknown method", pathinfo.PathInfo{Path: caPath, CA: "fixd:r:sha256:1hm1xxi0d0af48bb8qh303d4lncb4fzmdhmyhvv35ppqi06bg0qc"}, "unknown method"},
		{"bad hash", pathinfo.PathInfo{Path: caPath, CA: "fixed:r:sha256:1hm1"}, "unknown encoding"},
		{"text sha1", pathinfo.PathInfo{Path: caPath, CA: "text:sha1:iwjz551fyw0cxcjgf4l6c879zabd6wpm"}, "must be sha256"},
		{"flat with references", pathinfo.PathInfo{Path: caPath, References: []string{depPath}, CA: "fixed:sha1:iwjz551fyw0cxcjgf4l6c879zabd6wpm"}, "has no references"},
		{"empty", pathinfo.PathInfo{Path: caPath, CA: ":"}, "unknown method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCA(&tt.info)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("checkCA: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestForgedCA checks that a CA field added to the narinfo of an
// input-addressed path, which no signature covers, is dropped and logged,
// while a true one is kept.
func TestForgedCA(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	dir := t.TempDir()
	writeCache(t, dir,
		&entry{path: depPath, nar: helloNAR, signers: []signature.SecretKey{sk},
			narinfo: func(s string) string { return s + "CA: " + caPathCA + "\n" }},
		&entry{path: caPath, nar: helloNAR, ca: caPathCA, signers: []signature.SecretKey{sk}},
	)
	var log bytes.Buffer
	c := open(t, "file://"+dir, Options{TrustedKeys: []signature.PublicKey{pk}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	for _, tt := range []struct{ path, ca string }{{depPath, ""}, {caPath, caPathCA}} {
		info, err := c.QueryPathInfo(t.Context(), tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if info.CA != tt.ca {
			t.Errorf("QueryPathInfo(%s).CA = %q, want %q", tt.path, info.CA, tt.ca)
		}
	}
	if got := log.String(); strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, "treated as input-addressed") || !strings.Contains(got, "path="+depPath) {
		t.Errorf("log:\n%s\nwant one warning, about %s", got, depPath)
	}
}
