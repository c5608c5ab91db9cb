package publish

import (
	"bytes"
	"context"
	"errors"
	"go/build"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/decross-store/decross-store/internal/testenv"
)

// startVersityGW runs versitygw (installed by scripts/install-deps) on a
// temporary directory and returns a client and its host:port once it
// answers.
func startVersityGW(t *testing.T, access, secret string) (*minio.Client, string) {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		for _, p := range []string{"/usr/local/bin/versitygw", filepath.Join(build.Default.GOPATH, "bin", "versitygw")} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		testenv.SkipOrFail(t, "versitygw is missing; install it with scripts/install-deps")
	}
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
	mc, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		if _, err := mc.ListBuckets(ctx); err == nil {
			return mc, addr
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

// objects lists every object of bucket with its ETag and modification
// time, to show that a run changed nothing.
func objects(t *testing.T, mc *minio.Client, bucket string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for o := range mc.ListObjects(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		out[o.Key] = o.ETag + " " + o.LastModified.String()
	}
	return out
}

func TestPublishS3(t *testing.T) {
	mc, addr := startVersityGW(t, "publish-access", "publish-secret-key")
	if err := mc.MakeBucket(t.Context(), "cache", minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "publish-access")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "publish-secret-key")
	url := "s3://cache?endpoint=http://" + addr + "&region=us-east-1"

	sk, pk := keypair(t, "decross-test-1")
	upSK, _ := keypair(t, "upstream-1")
	src := newSource(t, sk, upSK)
	spool := t.TempDir()
	publish := func() *Result {
		t.Helper()
		dst, err := Open(t.Context(), url, spool)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		res, err := Publish(t.Context(), src, dst, Options{Key: pk, Jobs: 2})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := publish(); res.Published != 3 {
		t.Fatalf("first run: %+v", res)
	}
	checkCache(t, url, pk, src, appPath, libPath, caPath)
	before := objects(t, mc, "cache")
	if len(before) != 7 { // nix-cache-info, 3 narinfos, 3 NARs
		t.Errorf("bucket holds %v, want 7 objects", before)
	}
	obj, err := mc.StatObject(t.Context(), "cache", hashPart(appPath)+".narinfo", minio.StatObjectOptions{})
	if err != nil || obj.ContentType != "text/x-nix-narinfo" {
		t.Errorf("narinfo content type %q, %v", obj.ContentType, err)
	}
	if res := publish(); res.Published != 0 || res.Skipped != 3 {
		t.Errorf("second run: %+v, want 3 skipped", res)
	}
	after := objects(t, mc, "cache")
	for k, v := range before {
		if after[k] != v {
			t.Errorf("second run changed %s: %s -> %s", k, v, after[k])
		}
	}
	// A NAR deleted behind the cache's back is written again.
	data, err := mc.GetObject(t.Context(), "cache", hashPart(libPath)+".narinfo", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ni, err := io.ReadAll(data)
	data.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(ni), "URL: ")
	nar, _, _ := strings.Cut(rest, "\n")
	if err := mc.RemoveObject(t.Context(), "cache", nar, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if res := publish(); res.Published != 1 || res.Skipped != 2 {
		t.Errorf("run after removing %s: %+v, want it written again", nar, res)
	}
	checkCache(t, url, pk, src, appPath, libPath, caPath)
	// So is one cut short: the object of the wrong size is replaced.
	read := func(key string) []byte {
		t.Helper()
		o, err := mc.GetObject(t.Context(), "cache", key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		b, err := io.ReadAll(o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	whole := read(nar)
	if _, err := mc.PutObject(t.Context(), "cache", nar, strings.NewReader("cut"), 3, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if res := publish(); res.Published != 1 || res.Skipped != 2 {
		t.Errorf("run after cutting %s short: %+v, want it written again", nar, res)
	}
	if got := read(nar); !bytes.Equal(got, whole) {
		t.Errorf("%s after the run: %d bytes, want the %d first written", nar, len(got), len(whole))
	}
	checkCache(t, url, pk, src, appPath, libPath, caPath)
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spooled files left behind: %v", left)
	}

	if _, err := Open(t.Context(), strings.Replace(url, "s3://cache", "s3://missing", 1), spool); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open of a missing bucket: %v", err)
	}
}

// TestS3AccessDeniedIsAbsent: without s3:ListBucket, S3 answers a missing
// key with 403 AccessDenied; Get and Exists take it as missing, while
// other 403s (a bad signature) stay errors. The server is a stand-in that
// answers as S3 does.
func TestS3AccessDeniedIsAbsent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/cache" || r.URL.Path == "/cache/":
			w.WriteHeader(http.StatusOK) // the bucket exists
		case r.URL.Path == "/cache/badsig":
			w.WriteHeader(http.StatusForbidden)
			if r.Method == http.MethodGet {
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>`)
			}
		default:
			w.WriteHeader(http.StatusForbidden)
			if r.Method == http.MethodGet {
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "access")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-key")
	dst, err := Open(t.Context(), "s3://cache?endpoint="+srv.URL+"&region=us-east-1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	tests := []struct {
		key     string
		missing bool
	}{
		{"nix-cache-info", true},
		{"nar/0f7jqcwv2hb0akd1lhd8rbm1wsc0qhkm.nar.zst", true},
		{"badsig", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := dst.Get(t.Context(), tt.key)
			if errors.Is(err, fs.ErrNotExist) != tt.missing || err == nil {
				t.Errorf("Get: %v, want missing %v", err, tt.missing)
			}
			size, err := dst.Size(t.Context(), tt.key)
			// A HEAD answer has no body: any 403 reads as AccessDenied.
			if size != -1 || err != nil {
				t.Errorf("Size: %v, %v, want -1 (absent)", size, err)
			}
		})
	}
}
