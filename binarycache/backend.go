package binarycache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// errNotFound marks a file the cache does not have.
var errNotFound = errors.New("not found")

// errPermanent marks a failure that asking again would not change.
var errPermanent = errors.New("permanent")

// backend reads files of one cache by key, a slash-separated path relative
// to the cache root ("nix-cache-info", "<hash>.narinfo", "nar/...").
// Errors wrap errNotFound for a missing file and *statusError for other
// HTTP answers; anything else from a network backend is worth a retry.
type backend interface {
	open(ctx context.Context, key string) (io.ReadCloser, error)
	where(key string) string // for messages: a URL or file name
	close() error
}

// statusError is an HTTP answer other than success or "not found".
type statusError struct {
	url    string
	code   int
	status string // e.g. "500 Internal Server Error", or an S3 error code
}

func (e *statusError) Error() string { return fmt.Sprintf("GET %s: %s", e.url, e.status) }

func (e *statusError) retryable() bool {
	return e.code >= 500 || e.code == http.StatusTooManyRequests || e.code == http.StatusRequestTimeout
}

// retryable reports whether another attempt may succeed: server errors,
// timeouts, connection errors and truncated bodies, unless the caller gave
// up.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, errNotFound) || errors.Is(err, errPermanent) {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.retryable()
	}
	return true
}

// fileBackend reads a directory written by `nix copy --to file://...`.
// os.Root keeps every key inside it, symlinks included.
type fileBackend struct {
	dir  string
	root *os.Root
}

func openFileBackend(u *url.URL) (*fileBackend, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("file URL must name a local directory (file:///dir), not host %q", u.Host)
	}
	if u.Path == "" || !path.IsAbs(u.Path) {
		return nil, fmt.Errorf("file URL must name an absolute directory (file:///dir)")
	}
	root, err := os.OpenRoot(u.Path)
	if err != nil {
		return nil, err
	}
	return &fileBackend{dir: u.Path, root: root}, nil
}

func (b *fileBackend) open(_ context.Context, key string) (io.ReadCloser, error) {
	f, err := b.root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", b.where(key), errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPermanent, err)
	}
	return f, nil
}

func (b *fileBackend) where(key string) string { return path.Join(b.dir, key) }
func (b *fileBackend) close() error            { return b.root.Close() }

// httpBackend reads any HTTP(S) binary cache.
type httpBackend struct {
	base   *url.URL // path ends in "/"
	client *http.Client
}

func newHTTPBackend(u *url.URL, client *http.Client) *httpBackend {
	base := *u
	base.RawQuery, base.Fragment = "", ""
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
		base.RawPath = ""
	}
	return &httpBackend{base: &base, client: client}
}

func (b *httpBackend) where(key string) string {
	return b.base.JoinPath(key).String()
}

func (b *httpBackend) open(ctx context.Context, key string) (io.ReadCloser, error) {
	u := b.where(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %w", errPermanent, u, err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err // *url.Error names the method and URL
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusNotFound, http.StatusGone, http.StatusForbidden:
		// Nix treats 403 like 404 too: caches in front of S3 answer 403
		// for a missing key when listing is not allowed.
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %w", u, resp.Status, errNotFound)
	default:
		resp.Body.Close()
		return nil, &statusError{url: u, code: resp.StatusCode, status: resp.Status}
	}
}

func (b *httpBackend) close() error {
	b.client.CloseIdleConnections()
	return nil
}

// s3Backend reads a bucket of an S3-compatible object store, path-style.
type s3Backend struct {
	core     minio.Core
	bucket   string
	endpoint string // for messages
}

// s3Params are the query parameters of s3:// URLs that are understood,
// with Nix's meaning.
var s3Params = []string{"endpoint", "region", "scheme", "profile"}

// NewS3Client makes an S3 client for an s3://bucket?endpoint=...&region=...
// URL, as Nix understands one: path-style requests to the endpoint (AWS in
// region without one), credentials from the environment, then the shared
// credentials file (profile=), else anonymous. It returns the bucket and
// the endpoint as scheme://host, for messages. transport may be nil, and
// maxRetries 0 keeps minio's default.
func NewS3Client(u *url.URL, transport http.RoundTripper, maxRetries int) (mc *minio.Client, bucket, endpoint string, err error) {
	q := u.Query()
	for k := range q {
		if !slices.Contains(s3Params, k) {
			return nil, "", "", fmt.Errorf("unknown parameter %q (s3 URLs take %s)", k, strings.Join(s3Params, ", "))
		}
	}
	if u.Host == "" {
		return nil, "", "", errors.New("s3 URL must name a bucket (s3://bucket?endpoint=...)")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, "", "", fmt.Errorf("s3 URL must name a bucket only (s3://bucket?endpoint=...), not a path %q", u.Path)
	}
	region := q.Get("region")
	scheme := q.Get("scheme")
	if scheme == "" {
		scheme = "https"
	}
	if scheme != "http" && scheme != "https" {
		return nil, "", "", fmt.Errorf("scheme=%q: want http or https", scheme)
	}
	lookup := minio.BucketLookupPath
	host := q.Get("endpoint")
	switch {
	case host == "":
		if region == "" {
			region = "us-east-1"
		}
		host = "s3." + region + ".amazonaws.com"
		lookup = minio.BucketLookupAuto
	case strings.Contains(host, "://"):
		eu, err := url.Parse(host)
		if err != nil {
			return nil, "", "", fmt.Errorf("endpoint: %w", err)
		}
		if (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" || (eu.Path != "" && eu.Path != "/") {
			return nil, "", "", fmt.Errorf("endpoint %q: want http://host[:port] or https://host[:port]", host)
		}
		scheme, host = eu.Scheme, eu.Host
	}
	if region == "" {
		region = "us-east-1"
	}
	// Environment first (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
	// AWS_SESSION_TOKEN), then the shared credentials file; neither set
	// means anonymous requests, which public buckets answer.
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{Profile: q.Get("profile")},
	})
	mc, err = minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       scheme == "https",
		Region:       region,
		BucketLookup: lookup,
		Transport:    transport,
		MaxRetries:   maxRetries,
	})
	if err != nil {
		return nil, "", "", err
	}
	return mc, u.Host, scheme + "://" + host, nil
}

func openS3Backend(u *url.URL, client *http.Client) (*s3Backend, error) {
	// Cache retries, with its own bounds.
	mc, bucket, endpoint, err := NewS3Client(u, client.Transport, 1)
	if err != nil {
		return nil, err
	}
	return &s3Backend{core: minio.Core{Client: mc}, bucket: bucket, endpoint: endpoint}, nil
}

func (b *s3Backend) where(key string) string {
	return "s3://" + b.bucket + "/" + key + " at " + b.endpoint
}

func (b *s3Backend) open(ctx context.Context, key string) (io.ReadCloser, error) {
	body, _, _, err := b.core.GetObject(ctx, b.bucket, key, minio.GetObjectOptions{})
	if err == nil {
		return body, nil
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey || resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket:
		return nil, fmt.Errorf("%s: %s: %w", b.where(key), resp.Code, errNotFound)
	case resp.StatusCode == http.StatusForbidden && resp.Code == "AccessDenied":
		// S3 answers 403 for a missing key when the credentials may not
		// list the bucket. Bad credentials fail differently
		// (InvalidAccessKeyId, SignatureDoesNotMatch), and Open reports a
		// missing nix-cache-info either way.
		return nil, fmt.Errorf("%s: %s (a missing key, or no read access): %w", b.where(key), resp.Code, errNotFound)
	case resp.StatusCode != 0:
		return nil, &statusError{url: b.where(key), code: resp.StatusCode, status: fmt.Sprintf("%d %s: %s", resp.StatusCode, resp.Code, resp.Message)}
	}
	return nil, fmt.Errorf("GET %s: %w", b.where(key), err)
}

func (b *s3Backend) close() error { return nil }
