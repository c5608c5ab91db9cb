package binarycache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/decross-store/decross-store/pathinfo"
)

// Options configure a Cache. The zero value checks signatures against no
// key, which Open refuses: give TrustedKeys or set NoCheckSigs.
type Options struct {
	// TrustedKeys verify narinfo signatures, as Nix's
	// trusted-public-keys ("name:base64" parsed by
	// signature.ParsePublicKey). A path that none of them signed is not
	// served.
	TrustedKeys []signature.PublicKey
	// NoCheckSigs serves every path the cache has, signed or not: for a
	// cache that the administrator wrote (file://). Open logs it.
	NoCheckSigs bool
	// Logger gets retries, refused paths and the settings at Open; nil
	// logs nothing.
	Logger *slog.Logger
	// HTTPClient makes the requests of http(s):// and s3:// caches (s3
	// uses its Transport). Nil means DefaultHTTPClient().
	HTTPClient *http.Client
	// Attempts bounds the tries of one narinfo or nix-cache-info GET and
	// of the start of a NAR GET; 0 means 3.
	Attempts int
	// Backoff is the wait before the second attempt, doubled before each
	// later one; 0 means 100 ms.
	Backoff time.Duration
	// RequestTimeout bounds one attempt at a small file (nix-cache-info,
	// a narinfo); 0 means 30 s.
	RequestTimeout time.Duration
	// StallTimeout fails a NAR download, or the start of one, that
	// receives nothing for this long; 0 means 60 s. Downloads that make
	// progress have no overall limit.
	StallTimeout time.Duration
}

// DefaultHTTPClient is the client a Cache uses when Options.HTTPClient is
// nil: bounded connect and TLS handshake times, and no overall request
// timeout, which would cut off large NARs on slow links (stalls are
// caught by Options.StallTimeout instead).
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.MaxIdleConnsPerHost = 8
	return &http.Client{Transport: t}
}

// Cache reads one binary cache. Methods are safe for concurrent use.
type Cache struct {
	url         string
	b           backend
	keys        []signature.PublicKey
	noCheckSigs bool
	log         *slog.Logger
	attempts    int
	backoff     time.Duration
	reqTimeout  time.Duration
	stall       time.Duration
}

// Open parses rawURL and reads the cache's nix-cache-info, whose StoreDir
// must be /nix/store. rawURL is one of
//
//	file:///dir
//	http://host[:port]/path, https://host[:port]/path
//	s3://bucket?endpoint=http://host:port&region=us-east-1
//
// s3:// requests are path-style to the endpoint (without one, to AWS in
// region); credentials come from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, else from the AWS shared credentials file
// (profile=NAME picks a profile), else requests are anonymous.
func Open(ctx context.Context, rawURL string, opts Options) (*Cache, error) {
	c := &Cache{
		url:         rawURL,
		keys:        opts.TrustedKeys,
		noCheckSigs: opts.NoCheckSigs,
		log:         opts.Logger,
		attempts:    opts.Attempts,
		backoff:     opts.Backoff,
		reqTimeout:  opts.RequestTimeout,
		stall:       opts.StallTimeout,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.attempts <= 0 {
		c.attempts = 3
	}
	if c.backoff <= 0 {
		c.backoff = 100 * time.Millisecond
	}
	if c.reqTimeout <= 0 {
		c.reqTimeout = 30 * time.Second
	}
	if c.stall <= 0 {
		c.stall = 60 * time.Second
	}
	if len(c.keys) == 0 && !c.noCheckSigs {
		return nil, fmt.Errorf("open binary cache %s: no trusted public key to check signatures with (give one, or turn signature checks off for a cache you wrote yourself)", rawURL)
	}
	client := opts.HTTPClient
	if client == nil {
		client = DefaultHTTPClient()
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open binary cache: %w", err)
	}
	if u.Scheme != "s3" && (u.RawQuery != "" || u.Fragment != "") {
		return nil, fmt.Errorf("open binary cache %s: %s URLs take no parameters", rawURL, u.Scheme)
	}
	switch u.Scheme {
	case "file":
		c.b, err = openFileBackend(u)
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("open binary cache %s: no host", rawURL)
		}
		c.b = newHTTPBackend(u, client)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("open binary cache %s: no bucket (s3://bucket?endpoint=...)", rawURL)
		}
		c.b, err = openS3Backend(u, client)
	default:
		return nil, fmt.Errorf("open binary cache %s: want file:///dir, http(s)://host/path or s3://bucket?endpoint=URL", rawURL)
	}
	if err != nil {
		return nil, fmt.Errorf("open binary cache %s: %w", rawURL, err)
	}
	// Bounded like the retries of one file would be.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.attempts)*c.reqTimeout+c.backoff<<c.attempts)
	defer cancel()
	if err := c.checkCacheInfo(ctx); err != nil {
		c.b.close()
		return nil, fmt.Errorf("open binary cache %s: %w", rawURL, err)
	}
	if c.noCheckSigs {
		c.log.Warn("binary cache: signatures are not checked: every path the cache has is served", "upstream", rawURL)
	} else {
		names := make([]string, len(c.keys))
		for i, k := range c.keys {
			names[i] = k.Name
		}
		c.log.Info("binary cache", "upstream", rawURL, "trusted_keys", strings.Join(names, ","))
	}
	return c, nil
}

const maxCacheInfoSize = 64 << 10

// hashPartLen is the length of the hash part of a store path's base name.
var hashPartLen = nixbase32.EncodedLen(storepath.PathHashSize)

func (c *Cache) checkCacheInfo(ctx context.Context) error {
	data, err := c.getSmall(ctx, "nix-cache-info", maxCacheInfoSize)
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("not a binary cache: %w", err)
	}
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if dir, ok := strings.CutPrefix(sc.Text(), "StoreDir: "); ok && dir != storepath.StoreDir {
			return fmt.Errorf("nix-cache-info: the cache is for store %s, not %s", dir, storepath.StoreDir)
		}
	}
	return sc.Err()
}

// Close releases idle connections and open files. Readers from
// NarFromPath stay usable until closed.
func (c *Cache) Close() error { return c.b.close() }

// String is the URL the cache was opened with.
func (c *Cache) String() string { return c.url }

// getSmall reads a whole file of at most max bytes, retrying as Options
// say.
func (c *Cache) getSmall(ctx context.Context, key string, max int64) ([]byte, error) {
	var data []byte
	err := c.retry(ctx, key, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, c.reqTimeout)
		defer cancel()
		body, err := c.b.open(ctx, key)
		if err != nil {
			return err
		}
		defer body.Close()
		data, err = io.ReadAll(io.LimitReader(body, max+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", c.b.where(key), err)
		}
		if int64(len(data)) > max {
			return fmt.Errorf("%w: %s is larger than %d bytes", errPermanent, c.b.where(key), max)
		}
		return nil
	})
	return data, err
}

// retry runs attempt until it succeeds, fails for good, or has failed
// c.attempts times, waiting c.backoff, doubled each time, in between.
func (c *Cache) retry(ctx context.Context, key string, attempt func(context.Context) error) error {
	wait := c.backoff
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		if !retryable(ctx, err) {
			return err
		}
		if n >= c.attempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", c.b.where(key), n, err)
		}
		c.log.Warn("binary cache: retrying", "url", c.b.where(key), "attempt", n, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (after %d attempts, the last: %w)", c.b.where(key), ctx.Err(), n, err)
		case <-t.C:
		}
		wait *= 2
	}
}

// narInfo fetches, parses and checks the narinfo of path; (nil, nil, nil)
// when the cache does not have path.
func (c *Cache) narInfo(ctx context.Context, path string) (*narinfo.NarInfo, *pathinfo.PathInfo, error) {
	if _, err := storepath.FromAbsolutePath(path); err != nil {
		return nil, nil, fmt.Errorf("%q is not a store path: %w", path, err)
	}
	hashPart := strings.TrimPrefix(path, storepath.StoreDir+"/")[:hashPartLen]
	ni, info, err := c.narInfoByHash(ctx, hashPart)
	if err != nil || ni == nil {
		return nil, nil, err
	}
	if info.Path != path {
		// Another name with the same hash part: Nix too treats the path
		// asked for as not valid.
		c.log.Debug("binary cache: narinfo is for another path", "path", path, "narinfo_path", info.Path)
		return nil, nil, nil
	}
	return ni, info, nil
}

func (c *Cache) narInfoByHash(ctx context.Context, hashPart string) (*narinfo.NarInfo, *pathinfo.PathInfo, error) {
	key := hashPart + ".narinfo"
	data, err := c.getSmall(ctx, key, MaxNarInfoSize)
	if errors.Is(err, errNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	ni, err := parseNarInfo(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, c.b.where(key), err)
	}
	if !strings.HasPrefix(ni.StorePath, storepath.StoreDir+"/"+hashPart+"-") {
		return nil, nil, fmt.Errorf("%w: %s is for %s", ErrCorrupt, c.b.where(key), ni.StorePath)
	}
	info := toPathInfo(ni)
	if !c.noCheckSigs {
		if err := checkSigs(info, ni.Signatures, c.keys); err != nil {
			c.log.Warn("binary cache: not serving path", "path", info.Path, "reason", err)
			return nil, nil, err
		}
	}
	if info.CA != "" {
		if err := checkCA(info); err != nil {
			// No signature covers CA: without it the path is still
			// usable, as an input-addressed one.
			c.log.Warn("binary cache: ignoring a content address that does not give the store path; the path is treated as input-addressed", "path", info.Path, "reason", err)
			info.CA = ""
		}
	}
	return ni, info, nil
}

// QueryPathInfo returns the metadata of path from its narinfo, or (nil,
// nil) when the cache does not have it. A narinfo that no trusted key
// signed gives an error wrapping ErrUntrusted; one that cannot be used,
// ErrCorrupt.
func (c *Cache) QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error) {
	_, info, err := c.narInfo(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("query path info %s: %w", path, err)
	}
	return info, nil
}

// QueryPathFromHashPart returns the store path whose narinfo is
// <hashPart>.narinfo, or "" when the cache has none. It checks signatures
// as QueryPathInfo does.
func (c *Cache) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	if len(hashPart) != hashPartLen || strings.ContainsFunc(hashPart, func(r rune) bool {
		return !strings.ContainsRune("0123456789abcdfghijklmnpqrsvwxyz", r)
	}) {
		return "", fmt.Errorf("query path from hash part %q: not a store path hash", hashPart)
	}
	_, info, err := c.narInfoByHash(ctx, hashPart)
	if err != nil {
		return "", fmt.Errorf("query path from hash part %s: %w", hashPart, err)
	}
	if info == nil {
		return "", nil
	}
	return info.Path, nil
}
