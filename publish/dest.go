package publish

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
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/decross-store/decross-store/binarycache"
)

// maxSmallFile bounds what is read back of a narinfo or nix-cache-info:
// the largest real narinfos are tens of KiB.
const maxSmallFile = 1 << 20

// Destination is where a binary cache is written. Keys are slash-separated
// paths relative to the cache root ("nix-cache-info", "<hash>.narinfo",
// "nar/<filehash>.nar.zst"). Every write makes its key visible whole or not
// at all. Methods are safe for concurrent use.
type Destination interface {
	// Get returns a small file (at most 1 MiB), or an error wrapping
	// fs.ErrNotExist when the key is absent.
	Get(ctx context.Context, key string) ([]byte, error)
	// Size returns the size of key, -1 when it is absent (or, in a
	// directory, not a regular file).
	Size(ctx context.Context, key string) (int64, error)
	// Put writes data under key, replacing what was there.
	Put(ctx context.Context, key, contentType string, data []byte) error
	// Spool returns an empty temporary file to write a NAR into, and a
	// function that removes it if it was not committed.
	Spool() (f *os.File, discard func(), err error)
	// Commit makes the spooled file f, of size bytes, visible under key;
	// f is closed. A key that exists already with that size is left as it
	// is (keys of NARs are named by their content); one of another size,
	// cut short by a crash or an accident, is replaced.
	Commit(ctx context.Context, key, contentType string, f *os.File, size int64) error
	// Where names key for messages: a file name or URL.
	Where(key string) string
	Close() error
}

// Open opens the destination named by rawURL:
//
//	file:///dir
//	s3://bucket?endpoint=http://host:port&region=us-east-1
//
// A file:// directory is created if missing. s3:// URLs take the
// parameters Nix and binarycache.Open take (endpoint, region, scheme,
// profile), with credentials from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, else from the AWS shared credentials file; the
// bucket must exist. tempDir is where NARs for S3 are spooled ("" for the
// system's temporary directory).
func Open(ctx context.Context, rawURL, tempDir string) (Destination, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("destination %q: %w", rawURL, err)
	}
	var d Destination
	switch u.Scheme {
	case "file":
		d, err = openFileDest(u)
	case "s3":
		d, err = openS3Dest(ctx, u, tempDir)
	default:
		return nil, fmt.Errorf("destination %q: want file:///dir or s3://bucket?endpoint=URL", rawURL)
	}
	if err != nil {
		return nil, fmt.Errorf("destination %s: %w", rawURL, err)
	}
	return d, nil
}

// fileDest writes a local directory. Temporary files start with ".tmp-"
// and live next to their final name, so that a rename publishes them; no
// Nix client ever asks for such a name.
type fileDest struct {
	dir string
}

func openFileDest(u *url.URL) (*fileDest, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("file URL must name a local directory (file:///dir), not host %q", u.Host)
	}
	if u.Path == "" || !path.IsAbs(u.Path) {
		return nil, errors.New("file URL must name an absolute directory (file:///dir)")
	}
	if len(u.Query()) > 0 {
		return nil, errors.New("file URL takes no parameters (give --compression instead)")
	}
	dir := filepath.Clean(u.Path)
	// Directories other users' web servers can read, as nix copy makes.
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		return nil, err
	}
	return &fileDest{dir: dir}, nil
}

// file returns the local name of key, refusing keys that would leave the
// directory (keys are built by this package, so this is a safety net).
func (d *fileDest) file(key string) (string, error) {
	if !fs.ValidPath(key) || strings.Contains(key, "\\") {
		return "", fmt.Errorf("invalid key %q", key)
	}
	return filepath.Join(d.dir, filepath.FromSlash(key)), nil
}

func (d *fileDest) Where(key string) string { return filepath.Join(d.dir, filepath.FromSlash(key)) }

func (d *fileDest) Get(_ context.Context, key string) ([]byte, error) {
	name, err := d.file(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err // *fs.PathError names the file and wraps fs.ErrNotExist
	}
	defer f.Close()
	return readSmall(f, name)
}

func (d *fileDest) Size(_ context.Context, key string) (int64, error) {
	name, err := d.file(key)
	if err != nil {
		return 0, err
	}
	switch fi, err := os.Lstat(name); {
	case err == nil && fi.Mode().IsRegular():
		return fi.Size(), nil
	case err == nil:
		return -1, nil // a symlink or other stray entry: written over
	case errors.Is(err, fs.ErrNotExist):
		return -1, nil
	default:
		return 0, err
	}
}

func readSmall(r io.Reader, where string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSmallFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", where, err)
	}
	if len(data) > maxSmallFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", where, maxSmallFile)
	}
	return data, nil
}

func (d *fileDest) Put(_ context.Context, key, _ string, data []byte) error {
	name, err := d.file(key)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return d.publish(f, name, -1)
}

// publish makes the complete temporary file f visible as name: flushed to
// disk first, so that a crash cannot leave a visible name with missing
// bytes, and readable by a web server running as another user. With
// keepSize 0 or more, an existing regular file of that size is kept and f
// is removed.
func (d *fileDest) publish(f *os.File, name string, keepSize int64) error {
	tmp := f.Name()
	err := f.Chmod(0o644)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && keepSize >= 0 {
		if fi, serr := os.Lstat(name); serr == nil && fi.Mode().IsRegular() && fi.Size() == keepSize {
			os.Remove(tmp)
			return nil
		}
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("publish %s: %w", name, err)
	}
	// The rename itself must be durable before anything that refers to
	// name (a narinfo) is written.
	dir, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(name), err)
	}
	return nil
}

func (d *fileDest) Spool() (*os.File, func(), error) {
	f, err := os.CreateTemp(filepath.Join(d.dir, "nar"), ".tmp-*")
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close(); os.Remove(f.Name()) }, nil
}

func (d *fileDest) Commit(_ context.Context, key, _ string, f *os.File, size int64) error {
	name, err := d.file(key)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if filepath.Dir(name) != filepath.Dir(f.Name()) {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("commit %s: spooled in another directory", key)
	}
	return d.publish(f, name, size)
}

func (d *fileDest) Close() error { return nil }

// s3Dest writes a bucket of an S3-compatible object store. A PUT is
// atomic: an object appears whole when its upload completes, so NARs are
// uploaded straight to their final key, from a spooled local file.
type s3Dest struct {
	client   *minio.Client
	bucket   string
	endpoint string // for messages
	tempDir  string
}

// s3PartSize is the part size of multipart uploads: parts are read from
// the spooled file as needed, not buffered, and S3 allows 10,000 parts
// (about 160 GiB at this size).
const s3PartSize = 16 << 20

func openS3Dest(ctx context.Context, u *url.URL, tempDir string) (*s3Dest, error) {
	mc, bucket, endpoint, err := binarycache.NewS3Client(u, nil, 0)
	if err != nil {
		return nil, err
	}
	d := &s3Dest{client: mc, bucket: bucket, endpoint: endpoint, tempDir: tempDir}
	ok, err := mc.BucketExists(ctx, d.bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s at %s: %w", d.bucket, d.endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("bucket %s does not exist at %s (create it first)", d.bucket, d.endpoint)
	}
	return d, nil
}

func (d *s3Dest) Where(key string) string {
	return "s3://" + d.bucket + "/" + key + " at " + d.endpoint
}

func (d *s3Dest) Get(ctx context.Context, key string) ([]byte, error) {
	// GetObject is lazy: a missing key shows on the first read.
	obj, err := d.client.GetObject(ctx, d.bucket, key, minio.GetObjectOptions{})
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(obj, maxSmallFile+1))
		obj.Close()
	}
	if err != nil {
		if absent(err) {
			return nil, fmt.Errorf("%s: %w", d.Where(key), fs.ErrNotExist)
		}
		return nil, fmt.Errorf("get %s: %w", d.Where(key), err)
	}
	if len(data) > maxSmallFile {
		return nil, fmt.Errorf("get %s: larger than %d bytes", d.Where(key), maxSmallFile)
	}
	return data, nil
}

// absent reports whether err says that an object is missing. Without
// s3:ListBucket, S3 answers 403 AccessDenied rather than 404 for a missing
// key, so that is taken as missing too: at worst an object is written
// again, and a key that truly cannot be read fails when written.
func absent(err error) bool {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchBucket:
		return false
	case resp.Code == minio.NoSuchKey, resp.Code == minio.AccessDenied:
		return true
	}
	// Other 403 codes (a bad signature, an unknown access key) are errors
	// where S3 says so, on GET; a HEAD (StatObject) answer has no body, so
	// minio reports every 403 there as AccessDenied, and a credential
	// problem shows on the GET or PUT that follows.
	return resp.StatusCode == http.StatusNotFound
}

func (d *s3Dest) Size(ctx context.Context, key string) (int64, error) {
	st, err := d.client.StatObject(ctx, d.bucket, key, minio.StatObjectOptions{})
	switch {
	case err == nil:
		return st.Size, nil
	case absent(err):
		return -1, nil
	}
	return 0, fmt.Errorf("stat %s: %w", d.Where(key), err)
}

func (d *s3Dest) Put(ctx context.Context, key, contentType string, data []byte) error {
	_, err := d.client.PutObject(ctx, d.bucket, key, strings.NewReader(string(data)), int64(len(data)), minio.PutObjectOptions{ContentType: contentType})
	if err != nil {
		return fmt.Errorf("put %s: %w", d.Where(key), err)
	}
	return nil
}

func (d *s3Dest) Spool() (*os.File, func(), error) {
	f, err := os.CreateTemp(d.tempDir, "decross-publish-*.nar")
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close(); os.Remove(f.Name()) }, nil
}

func (d *s3Dest) Commit(ctx context.Context, key, contentType string, f *os.File, size int64) error {
	defer func() { f.Close(); os.Remove(f.Name()) }()
	if have, err := d.Size(ctx, key); err != nil {
		return err
	} else if have == size {
		return nil // named by its content: already there
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := d.client.PutObject(ctx, d.bucket, key, f, size, minio.PutObjectOptions{
		ContentType: contentType,
		PartSize:    s3PartSize,
		NumThreads:  2,
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", d.Where(key), err)
	}
	return nil
}

func (d *s3Dest) Close() error { return nil }
