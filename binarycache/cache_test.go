package binarycache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/pathinfo"
)

// serve makes dir's cache reachable as scheme ("file" or "http") and
// returns its URL.
func serve(t *testing.T, scheme, dir string) string {
	t.Helper()
	if scheme == "file" {
		return "file://" + dir
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func open(t *testing.T, url string, opts Options) *Cache {
	t.Helper()
	if opts.Backoff == 0 {
		opts.Backoff = time.Millisecond
	}
	c, err := Open(t.Context(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readNAR(ctx context.Context, c *Cache, path string) ([]byte, error) {
	rc, err := c.NarFromPath(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestReadCompressions(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	dirNAR := nartest.Encode(nartest.Dir(
		nartest.E("bin", nartest.Dir(nartest.E("hello", nartest.Exe("#!/bin/sh\necho "+depPath+"\n")))),
		nartest.E("lib", nartest.Sym(depPath)),
	))
	for _, comp := range []string{"none", "xz", "zstd", "bzip2", "br", "gzip"} {
		for _, scheme := range []string{"file", "http"} {
			t.Run(comp+"/"+scheme, func(t *testing.T) {
				dir := t.TempDir()
				nar := dirNAR
				if comp == "bzip2" {
					nar = helloNAR
				}
				want := writeCache(t, dir,
					&entry{path: helloPath, nar: nar, compression: comp, refs: []string{helloPath, depPath}, deriver: drvPath, signers: []signature.SecretKey{sk}},
					&entry{path: depPath, nar: helloNAR, compression: comp, signers: []signature.SecretKey{sk}},
					&entry{path: caPath, nar: helloNAR, compression: comp, ca: caPathCA, signers: []signature.SecretKey{sk}},
				)
				c := open(t, serve(t, scheme, dir), Options{TrustedKeys: []signature.PublicKey{pk}})
				ctx := t.Context()
				for _, p := range []string{helloPath, depPath, caPath} {
					got, err := c.QueryPathInfo(ctx, p)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(got, want[p]) {
						t.Errorf("QueryPathInfo(%s) = %+v, want %+v", p, got, want[p])
					}
					gotNAR, err := readNAR(ctx, c, p)
					if err != nil {
						t.Fatal(err)
					}
					if sum := pathinfo.NarHash(sha256.Sum256(gotNAR)); sum != want[p].NarHash {
						t.Errorf("NarFromPath(%s): hash %s, want %s", p, sum, want[p].NarHash)
					}
				}
				if got, err := c.QueryPathFromHashPart(ctx, helloPath[11:43]); err != nil || got != helloPath {
					t.Errorf("QueryPathFromHashPart = %q, %v; want %s", got, err, helloPath)
				}
			})
		}
	}
}

func TestNotInCache(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	for _, scheme := range []string{"file", "http"} {
		t.Run(scheme, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, signers: []signature.SecretKey{sk}})
			c := open(t, serve(t, scheme, dir), Options{TrustedKeys: []signature.PublicKey{pk}})
			ctx := t.Context()
			if info, err := c.QueryPathInfo(ctx, otherPath); info != nil || err != nil {
				t.Errorf("QueryPathInfo(missing) = %v, %v; want nil, nil", info, err)
			}
			// Same hash part, another name: not the path asked for.
			if info, err := c.QueryPathInfo(ctx, helloPath+"-2"); info != nil || err != nil {
				t.Errorf("QueryPathInfo(other name) = %v, %v; want nil, nil", info, err)
			}
			if p, err := c.QueryPathFromHashPart(ctx, otherPath[11:43]); p != "" || err != nil {
				t.Errorf("QueryPathFromHashPart(missing) = %q, %v", p, err)
			}
			if _, err := readNAR(ctx, c, otherPath); err == nil || !strings.Contains(err.Error(), "does not have it") {
				t.Errorf("NarFromPath(missing): %v", err)
			}
			if _, err := c.QueryPathInfo(ctx, "/nix/store/x"); err == nil {
				t.Error("QueryPathInfo(not a store path) succeeded")
			}
		})
	}
}

func TestSignatures(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	otherSK, _ := keypair(t, "other-1")
	impostorSK, _ := keypair(t, "cache-1")
	tests := []struct {
		name    string
		signers []signature.SecretKey
		keys    []signature.PublicKey
		noCheck bool
		wantErr []string // substrings; nil = served
	}{
		{name: "trusted", signers: []signature.SecretKey{otherSK, sk}, keys: []signature.PublicKey{pk}},
		{name: "unsigned", keys: []signature.PublicKey{pk}, wantErr: []string{"not signed", "trusted keys: cache-1", helloPath}},
		{name: "other key", signers: []signature.SecretKey{otherSK}, keys: []signature.PublicKey{pk}, wantErr: []string{"signed only by other-1", helloPath}},
		{name: "same name, other key", signers: []signature.SecretKey{impostorSK, otherSK}, keys: []signature.PublicKey{pk},
			wantErr: []string{"signed by cache-1, other-1", "signature of cache-1 does not verify"}},
		{name: "no check", noCheck: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, compression: "xz", signers: tt.signers})
			c := open(t, serve(t, "file", dir), Options{TrustedKeys: tt.keys, NoCheckSigs: tt.noCheck})
			ctx := t.Context()
			info, qerr := c.QueryPathInfo(ctx, helloPath)
			nar, nerr := readNAR(ctx, c, helloPath)
			_, herr := c.QueryPathFromHashPart(ctx, helloPath[11:43])
			if tt.wantErr == nil {
				if qerr != nil || nerr != nil || herr != nil || info == nil || !bytes.Equal(nar, helloNAR) {
					t.Fatalf("not served: %v, %v, %v", qerr, nerr, herr)
				}
				return
			}
			for _, err := range []error{qerr, nerr, herr} {
				if !errors.Is(err, ErrUntrusted) {
					t.Fatalf("err = %v, want ErrUntrusted", err)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
			}
		})
	}
}

// TestBadNAR serves NARs that do not match their narinfo. None may read
// to io.EOF, and each error must name the path.
func TestBadNAR(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	other := nartest.Encode(nartest.Reg("hello from a binary cachE\n")) // same size
	longer := nartest.Encode(nartest.Reg("hello from a binary cache, and more\n"))
	shorter := nartest.Encode(nartest.Reg("hello\n"))
	tests := []struct {
		name        string
		compression string
		file        func(t *testing.T) []byte
		narinfo     func(string) string
		want        string
	}{
		{name: "nar hash", compression: "xz", file: func(t *testing.T) []byte { b, _ := compress(t, "xz", other); return b },
			narinfo: dropFileFields, want: "has hash"},
		{name: "nar hash, none", compression: "none", file: func(*testing.T) []byte { return other }, want: "has hash"},
		{name: "longer", compression: "zstd", file: func(t *testing.T) []byte { b, _ := compress(t, "zstd", longer); return b },
			narinfo: dropFileFields, want: "longer than its NarSize"},
		{name: "shorter", compression: "br", file: func(t *testing.T) []byte { b, _ := compress(t, "br", shorter); return b },
			narinfo: dropFileFields, want: "its NarSize is"},
		{name: "file hash", compression: "gzip", file: func(t *testing.T) []byte {
			b, _ := compress(t, "gzip", helloNAR)
			b[4] ^= 1 // the mtime: still decompresses to the same NAR
			return b
		}, want: "does not match its FileHash"},
		{name: "file size", compression: "gzip", file: func(t *testing.T) []byte {
			b, _ := compress(t, "gzip", helloNAR)
			return append(b, 0)
		}, want: "longer than"},
		{name: "truncated file", compression: "xz", file: func(t *testing.T) []byte {
			b, _ := compress(t, "xz", helloNAR)
			return b[:len(b)-10]
		}, want: helloPath},
		{name: "not compressed as said", compression: "zstd", file: func(*testing.T) []byte { return helloNAR }, want: helloPath},
	}
	for _, tt := range tests {
		for _, scheme := range []string{"file", "http"} {
			t.Run(tt.name+"/"+scheme, func(t *testing.T) {
				dir := t.TempDir()
				writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, compression: tt.compression, signers: []signature.SecretKey{sk},
					file: tt.file(t), narinfo: tt.narinfo})
				c := open(t, serve(t, scheme, dir), Options{TrustedKeys: []signature.PublicKey{pk}})
				rc, err := c.NarFromPath(t.Context(), helloPath)
				if err == nil {
					_, err = io.ReadAll(rc)
					if err2 := rc.Close(); err2 != nil {
						t.Errorf("close: %v", err2)
					}
				}
				if err == nil {
					t.Fatal("a NAR that does not match its narinfo was read to the end")
				}
				if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), helloPath) {
					t.Errorf("error %q does not say %q and name the path", err, tt.want)
				}
			})
		}
	}
}

// dropFileFields removes FileHash and FileSize, so that only the NAR
// checks can catch a bad file.
func dropFileFields(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "FileHash: ") && !strings.HasPrefix(l, "FileSize: ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestBadNarInfo(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	replaceURL := func(u string) func(string) string {
		return func(s string) string {
			i := strings.Index(s, "URL: ")
			j := i + strings.Index(s[i:], "\n")
			return s[:i] + "URL: " + u + s[j:]
		}
	}
	tests := []struct {
		name    string
		narinfo func(string) string
		want    string
	}{
		{name: "dotdot", narinfo: replaceURL("nar/../../etc/passwd"), want: `".." path segments`},
		{name: "dotdot only", narinfo: replaceURL(".."), want: `".." path segments`},
		{name: "absolute URL", narinfo: replaceURL("http://127.0.0.2/nar/x.nar"), want: "only a path relative"},
		{name: "absolute path", narinfo: replaceURL("/etc/passwd"), want: "only a path relative"},
		{name: "scheme-relative", narinfo: replaceURL("//127.0.0.2/x"), want: "only a path relative"},
		{name: "escaped", narinfo: replaceURL("nar/%2e%2e/x"), want: "not allowed"},
		{name: "query", narinfo: replaceURL("nar/x?y"), want: "not allowed"},
		{name: "oversized", narinfo: func(s string) string { return s + "System: " + strings.Repeat("x", MaxNarInfoSize) + "\n" }, want: "larger than"},
		{name: "other path", narinfo: func(s string) string { return strings.Replace(s, helloPath, otherPath, 1) }, want: "is for " + otherPath},
		{name: "compression", narinfo: func(s string) string { return strings.Replace(s, "Compression: none", "Compression: lz4", 1) }, want: `compression "lz4" is not supported`},
		{name: "no NarHash", narinfo: func(s string) string { return dropLines(s, "NarHash: ") }, want: "no NarHash"},
		{name: "bad hash", narinfo: func(s string) string { return strings.Replace(s, "NarHash: sha256:", "NarHash: sha256:x", 1) }, want: "parse narinfo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, signers: []signature.SecretKey{sk}, narinfo: tt.narinfo})
			c := open(t, serve(t, "http", dir), Options{TrustedKeys: []signature.PublicKey{pk}})
			info, err := c.QueryPathInfo(t.Context(), helloPath)
			if err == nil {
				t.Fatalf("QueryPathInfo = %+v, want an error", info)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if _, err := readNAR(t.Context(), c, helloPath); err == nil {
				t.Error("NarFromPath succeeded")
			}
		})
	}
}

func dropLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestUnknownNarInfoFieldsIgnored(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	dir := t.TempDir()
	writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, signers: []signature.SecretKey{sk},
		narinfo: func(s string) string { return s + "FutureField: 1\n" }})
	c := open(t, serve(t, "file", dir), Options{TrustedKeys: []signature.PublicKey{pk}})
	if info, err := c.QueryPathInfo(t.Context(), helloPath); err != nil || info == nil {
		t.Fatalf("QueryPathInfo = %v, %v", info, err)
	}
}

func TestOpenErrors(t *testing.T) {
	_, pk := keypair(t, "cache-1")
	keys := []signature.PublicKey{pk}
	good := t.TempDir()
	writeCache(t, good)
	otherStore := t.TempDir()
	write(t, filepath.Join(otherStore, "nix-cache-info"), []byte("StoreDir: /gnu/store\n"))
	tests := []struct {
		name, url string
		opts      Options
		want      string
	}{
		{name: "no keys", url: "file://" + good, want: "no trusted public key"},
		{name: "scheme", url: "ftp://host/x", opts: Options{TrustedKeys: keys}, want: "want file:///dir"},
		{name: "relative file", url: "file://dir", opts: Options{TrustedKeys: keys}, want: "local directory"},
		{name: "params", url: "file://" + good + "?priority=10", opts: Options{TrustedKeys: keys}, want: "take no parameters"},
		{name: "s3 param", url: "s3://bucket?endpoint=http://127.0.0.1:1&foo=1", opts: Options{TrustedKeys: keys}, want: `unknown parameter "foo"`},
		{name: "s3 endpoint", url: "s3://bucket?endpoint=ftp://127.0.0.1:1", opts: Options{TrustedKeys: keys}, want: "want http://host[:port]"},
		{name: "missing dir", url: "file://" + good + "/nope", opts: Options{TrustedKeys: keys}, want: "no such file"},
		{name: "not a cache", url: "file://" + t.TempDir(), opts: Options{TrustedKeys: keys}, want: "not a binary cache"},
		{name: "store dir", url: "file://" + otherStore, opts: Options{TrustedKeys: keys}, want: "/gnu/store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Open(t.Context(), tt.url, tt.opts)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}
