package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"go/build"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/binarycache"
	"github.com/decross-store/decross-store/internal/testenv"
	"github.com/decross-store/decross-store/pathinfo"
)

// binaryCacheExpr builds a path with a reference and a deriver: a text
// file, and a derivation output that names it.
const binaryCacheExpr = `let dep = builtins.toFile "binarycache-dep" "hello from a binary cache\n"; in
derivation { name = "binarycache-out"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo ${dep} > $out"]; }`

// TestBinaryCache reads caches that the real nix copy wrote, in every
// compression Nix 2.8 writes, from file://, from http:// (a Go file
// server) and from s3:// (versitygw on a temporary directory), and checks
// them against nix path-info and nix-store --dump.
func TestBinaryCache(t *testing.T) {
	EnsureDaemon(t)
	ctx := testContext(t, 5*time.Minute)
	dir := t.TempDir()
	nix := func(name string, args ...string) string {
		t.Helper()
		out, err := nixCommand(ctx, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	nix("nix-store", "--generate-binary-cache-key", "e2e-cache-1", sk, pk)
	pkText, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signature.ParsePublicKey(strings.TrimSpace(string(pkText)))
	if err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(nix("nix-build", "--no-out-link", "-E", binaryCacheExpr))
	closure := strings.Fields(nix("nix-store", "-qR", out))
	if len(closure) != 2 {
		t.Fatalf("closure of %s is %v, want it and its text file", out, closure)
	}

	want := map[string]jsonPathInfo{}
	for _, info := range pathInfoJSON(t, nix("nix", "path-info", "--json", "-r", out)) {
		want[info.Path] = info
	}
	if want[out].Deriver == "" || len(want[out].References) != 1 {
		t.Fatalf("nix path-info says %+v; want a deriver and one reference, to compare them", want[out])
	}
	nars := map[string][]byte{}
	for _, p := range closure {
		nars[p] = []byte(nix("nix-store", "--dump", p))
	}

	caches := map[string]string{}
	for _, comp := range []string{"xz", "zstd", "none", "bzip2", "br"} {
		cacheDir := filepath.Join(dir, "cache-"+comp)
		nix("nix", "copy", "--to", "file://"+cacheDir+"?compression="+comp, out)
		nix("nix", "store", "sign", "--store", "file://"+cacheDir, "--key-file", sk, "-r", out)
		caches[comp] = cacheDir
	}
	trusted := binarycache.Options{TrustedKeys: []signature.PublicKey{key}}

	for comp, cacheDir := range caches {
		t.Run("file/"+comp, func(t *testing.T) {
			checkBinaryCache(t, "file://"+cacheDir, trusted, closure, want, nars)
		})
	}
	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(http.FileServer(http.Dir(caches["xz"])))
		t.Cleanup(srv.Close)
		checkBinaryCache(t, srv.URL+"/", trusted, closure, want, nars)
	})
	t.Run("s3", func(t *testing.T) {
		endpoint := startVersityGW(t, ctx, "e2e-access", "e2e-secret-key")
		uploadCache(t, ctx, endpoint, "e2e-access", "e2e-secret-key", "nix-cache", caches["zstd"])
		t.Setenv("AWS_ACCESS_KEY_ID", "e2e-access")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "e2e-secret-key")
		checkBinaryCache(t, "s3://nix-cache?endpoint=http://"+endpoint+"&region=us-east-1", trusted, closure, want, nars)

		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
		if c, err := binarycache.Open(t.Context(), "s3://nix-cache?endpoint=http://"+endpoint, trusted); err == nil {
			c.Close()
			t.Error("Open with a wrong secret key succeeded")
		} else {
			t.Logf("wrong secret key: %v", err)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		_, other, err := signature.GenerateKeypair("other-1", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c, err := binarycache.Open(t.Context(), "file://"+caches["xz"], binarycache.Options{TrustedKeys: []signature.PublicKey{other}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.QueryPathInfo(ctx, out)
		if !errors.Is(err, binarycache.ErrUntrusted) || !strings.Contains(err.Error(), "e2e-cache-1") || !strings.Contains(err.Error(), out) {
			t.Errorf("QueryPathInfo with another key: %v; want ErrUntrusted naming e2e-cache-1 and the path", err)
		}
	})
}

// checkBinaryCache opens url and compares each path of closure with what
// nix path-info printed and nix-store --dump wrote.
func checkBinaryCache(t *testing.T, url string, opts binarycache.Options, closure []string, want map[string]jsonPathInfo, nars map[string][]byte) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	c, err := binarycache.Open(t.Context(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range closure {
		info, err := c.QueryPathInfo(ctx, p)
		if err != nil || info == nil {
			t.Fatalf("QueryPathInfo(%s) = %v, %v", p, info, err)
		}
		w := want[p]
		wantHash, err := pathinfo.ParseNarHash(w.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		refs := slices.Clone(w.References)
		slices.Sort(refs)
		if info.NarHash != wantHash || info.NarSize != w.NarSize || !slices.Equal(info.References, refs) ||
			info.CA != w.CA || info.Deriver != w.Deriver || len(info.Sigs) == 0 {
			t.Errorf("QueryPathInfo(%s) = %+v; nix path-info says %+v", p, info, w)
		}
		rc, err := c.NarFromPath(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		nar, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("NarFromPath(%s): %v", p, err)
		}
		if !bytes.Equal(nar, nars[p]) {
			t.Errorf("NarFromPath(%s) differs from nix-store --dump (%d and %d bytes)", p, len(nar), len(nars[p]))
		}
		if got, err := c.QueryPathFromHashPart(ctx, p[11:43]); got != p || err != nil {
			t.Errorf("QueryPathFromHashPart(%s) = %q, %v", p[11:43], got, err)
		}
	}
	missing := "/nix/store/00000000000000000000000000000000-missing"
	if info, err := c.QueryPathInfo(ctx, missing); info != nil || err != nil {
		t.Errorf("QueryPathInfo(missing) = %v, %v; want nil, nil", info, err)
	}
}

// versityGW finds the versitygw binary that scripts/install-deps installs.
func versityGW(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/local/bin/versitygw", filepath.Join(build.Default.GOPATH, "bin", "versitygw")} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.SkipOrFail(t, "versitygw is missing; install it with scripts/install-deps")
	return ""
}

// startVersityGW runs versitygw's posix backend on a temporary directory
// and returns its host:port once it answers S3 requests.
func startVersityGW(t *testing.T, ctx context.Context, access, secret string) string {
	t.Helper()
	bin := versityGW(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "--quiet", "posix", t.TempDir())
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	mc := minioClient(t, addr, access, secret)
	for {
		if _, err := mc.ListBuckets(ctx); err == nil {
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("versitygw exited before answering on %s: %v\n%s", addr, err, logs.String())
		case <-ctx.Done():
			t.Fatalf("versitygw did not answer on %s: %v\n%s", addr, ctx.Err(), logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func minioClient(t *testing.T, addr, access, secret string) *minio.Client {
	t.Helper()
	mc, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// uploadCache copies the files of a file:// cache into a new bucket, as
// nix copy --to s3://... would have (Debian's Nix is built without S3).
func uploadCache(t *testing.T, ctx context.Context, addr, access, secret, bucket, dir string) {
	t.Helper()
	mc := minioClient(t, addr, access, secret)
	if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if _, err := mc.FPutObject(ctx, bucket, filepath.ToSlash(rel), p, minio.PutObjectOptions{}); err != nil {
			return fmt.Errorf("upload %s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
