package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/binarycache"
)

// TestPublish writes the example's servable closure into a binary cache
// with `publish`, and has the real Nix read it back with nothing else:
// nix copy --from file:// and from http:// (a plain Go file server over
// the directory) with only the publisher's key trusted, then nix store
// verify. The mapping holds a leaky script: publish names it, publishes
// the rest and fails. A second run writes nothing. The same to S3
// (versitygw), read back with the project's binary-cache reader.
func TestPublish(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	withLeak, m := servableMapping(t, ex, work)
	leaky, main := ex.Get(t, "leaky"), ex.Get(t, Main)
	clean := filepath.Join(work, "clean.json")
	writeMapping(t, clean, without(m, leaky.Native))
	ctx := testContext(t, 5*time.Minute)

	bin := serverBinary(t)
	sk, pkFile := filepath.Join(work, "secret.key"), filepath.Join(work, "public.key")
	run(t, bin, "keygen", "--name", "decross-publish-1", "--secret-key-file", sk, "--public-key-file", pkFile)
	pkText, err := os.ReadFile(pkFile)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := signature.ParsePublicKey(strings.TrimSpace(string(pkText)))
	if err != nil {
		t.Fatal(err)
	}
	// One rewrite cache for every run: the runs differ in where they
	// write, not in what they rewrite.
	cacheDir := filepath.Join(work, "cache")
	publish := func(t *testing.T, mappingFile, to string, extra ...string) (string, string, error) {
		t.Helper()
		args := append([]string{"publish", "--mapping", mappingFile, "--signing-key", sk, "--upstream", "daemon", "--cache-dir", cacheDir, "--to", to, "--jobs", "2"}, extra...)
		return runTool(t, args...)
	}
	// nix runs the nix CLI trusting only the publisher's key.
	nix := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "nix", args...)
		cmd.Env = NixEnv()
		for i, kv := range cmd.Env {
			if strings.HasPrefix(kv, "NIX_CONFIG=") {
				cmd.Env[i] = kv + "\nrequire-sigs = true\ntrusted-public-keys = " + strings.TrimSpace(string(pkText))
			}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nix %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	copyAndVerify := func(t *testing.T, from string) {
		t.Helper()
		dest := filepath.Join(t.TempDir(), "store")
		t.Cleanup(func() { makeWritable(t, dest) })
		if err := nix("copy", "--from", from, "--to", dest, main.Native); err != nil {
			t.Fatal(err)
		}
		if err := nix("store", "verify", "--store", dest, "-r", main.Native); err != nil {
			t.Fatal(err)
		}
		if err := nix("path-info", "--store", dest, leaky.Native); err == nil {
			t.Errorf("%s was published", leaky.Native)
		}
	}
	dir := filepath.Join(work, "bincache")

	t.Run("file", func(t *testing.T) {
		stdout, stderr, err := publish(t, withLeak, "file://"+dir)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("publish of a mapping with a leak: %v, want exit status 1\n%s%s", err, stdout, stderr)
		}
		if !strings.Contains(stderr, "cannot be served: path '"+leaky.Native+"'") || !strings.Contains(stderr, "1 mapped path cannot be served") {
			t.Errorf("stderr does not name %s:\n%s", leaky.Native, stderr)
		}
		if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "published ") || !strings.Contains(lines[0], "0 already there; 0 failed") {
			t.Errorf("stdout %q, want one summary line", stdout)
		}
		t.Log(strings.TrimSpace(stdout))
		copyAndVerify(t, "file://"+dir)
	})

	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		t.Cleanup(srv.Close)
		copyAndVerify(t, srv.URL)
	})

	t.Run("again", func(t *testing.T) {
		before := treeSnapshot(t, dir)
		stdout, stderr, err := publish(t, clean, "file://"+dir)
		if err != nil {
			t.Fatalf("second publish: %v\n%s%s", err, stdout, stderr)
		}
		if !strings.HasPrefix(stdout, "published 0 of ") || stderr != "" {
			t.Errorf("second publish printed %q and %q, want nothing published and no warning", stdout, stderr)
		}
		after := treeSnapshot(t, dir)
		for p, v := range before {
			if after[p] != v {
				t.Errorf("second publish changed %s", p)
			}
		}
		if len(after) != len(before) {
			t.Errorf("second publish left %d files, the first %d", len(after), len(before))
		}
	})

	// Into a cache that nix copy --to started: its nix-cache-info holds
	// only StoreDir, and is kept as it is.
	t.Run("nix copy cache", func(t *testing.T) {
		shared := filepath.Join(t.TempDir(), "shared")
		if err := nix("copy", "--to", "file://"+shared, main.Cross); err != nil {
			t.Fatal(err)
		}
		info, err := os.ReadFile(filepath.Join(shared, "nix-cache-info"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nix copy wrote nix-cache-info %q", info)
		stdout, stderr, err := publish(t, clean, "file://"+shared)
		if err != nil {
			t.Fatalf("publish into nix copy's cache (nix-cache-info %q): %v\n%s%s", info, err, stdout, stderr)
		}
		if after, err := os.ReadFile(filepath.Join(shared, "nix-cache-info")); err != nil || !bytes.Equal(after, info) {
			t.Errorf("nix-cache-info %q became %q, %v", info, after, err)
		}
		copyAndVerify(t, "file://"+shared)
	})

	// On a terminal, a progress bar on stderr (script(1) provides the pty).
	t.Run("terminal", func(t *testing.T) {
		cmdline := strings.Join([]string{bin, "publish", "--mapping", clean, "--signing-key", sk, "--cache-dir", cacheDir, "--to", "file://" + dir}, " ")
		cmd := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null")
		cmd.Env = NixEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("publish under script: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`\rpublish .*\(\d+/\d+\)`).Match(out) || !strings.Contains(string(out), "published 0 of ") {
			t.Errorf("no progress bar or no summary line in the terminal output %q", out)
		}
	})

	t.Run("s3", func(t *testing.T) {
		endpoint := startVersityGW(t, ctx, "e2e-access", "e2e-secret-key")
		mc := minioClient(t, endpoint, "e2e-access", "e2e-secret-key")
		if err := mc.MakeBucket(ctx, "published", minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_ACCESS_KEY_ID", "e2e-access")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "e2e-secret-key")
		url := "s3://published?endpoint=http://" + endpoint + "&region=us-east-1"
		if stdout, stderr, err := publish(t, clean, url, "--compression", "xz"); err != nil {
			t.Fatalf("publish to S3: %v\n%s%s", err, stdout, stderr)
		}
		c, err := binarycache.Open(t.Context(), url, binarycache.Options{TrustedKeys: []signature.PublicKey{pk}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Every path of the file:// cache, from S3: the same path info,
		// and a NAR that verifies against it.
		local, err := binarycache.Open(t.Context(), "file://"+dir, binarycache.Options{TrustedKeys: []signature.PublicKey{pk}})
		if err != nil {
			t.Fatal(err)
		}
		defer local.Close()
		infos, err := filepath.Glob(filepath.Join(dir, "*.narinfo"))
		if err != nil || len(infos) == 0 {
			t.Fatalf("no narinfo in %s: %v", dir, err)
		}
		for _, f := range infos {
			p, err := local.QueryPathFromHashPart(ctx, strings.TrimSuffix(filepath.Base(f), ".narinfo"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := local.QueryPathInfo(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.QueryPathInfo(ctx, p)
			if err != nil || got == nil || got.NarHash != want.NarHash || got.Fingerprint() != want.Fingerprint() {
				t.Fatalf("S3 QueryPathInfo(%s) = %+v, %v; file:// has %+v", p, got, err, want)
			}
			rc, err := c.NarFromPath(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil || !bytes.Equal(h.Sum(nil), want.NarHash[:]) {
				t.Errorf("S3 NarFromPath(%s): %v", p, err)
			}
		}
		objects := func() map[string]string {
			out := map[string]string{}
			for o := range mc.ListObjects(ctx, "published", minio.ListObjectsOptions{Recursive: true}) {
				if o.Err != nil {
					t.Fatal(o.Err)
				}
				out[o.Key] = o.ETag + " " + o.LastModified.String()
			}
			return out
		}
		before := objects()
		if stdout, stderr, err := publish(t, clean, url, "--compression", "xz"); err != nil || !strings.HasPrefix(stdout, "published 0 of ") {
			t.Fatalf("second publish to S3: %v\n%s%s", err, stdout, stderr)
		}
		after := objects()
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Errorf("second publish changed the bucket:\n%v\n%v", before, after)
		}
	})
}

// treeSnapshot is every file and directory under dir with its mode,
// modification time and contents' hash.
func treeSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var data []byte
		if !d.IsDir() {
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[p] = fmt.Sprintf("%v %d %x", fi.Mode(), fi.ModTime().UnixNano(), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
