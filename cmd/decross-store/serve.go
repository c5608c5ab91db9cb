package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/metrics"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/sshserver"
	"github.com/decross-store/decross-store/store"
)

type serveFlags struct {
	listen, hostKey, authorizedKeys, mapping, signingKey, cacheDir string
	logLevel, logFormat, remoteStore, config, metrics              string
	stdio                                                          bool
	shutdownTimeout                                                time.Duration
	cacheMaxSize                                                   narcache.Size
	upstream                                                       upstreamFlags
	http, sshCiphers                                               string
	httpPriority, httpMaxRequests                                  int

	// SSH limits: see sshserver.Server.
	maxConnections, maxStartups, maxStartupsPerSource, maxQueue, maxQueuePerSource int
	queueTimeout                                                                   time.Duration
}

// newServeFlags declares serve's flags; configKeys reads them too, so every
// flag is also a configuration file key.
func newServeFlags(stderr io.Writer) (*flag.FlagSet, *serveFlags) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	fs.StringVar(&f.config, configFlag, "", "TOML `file` of settings, keyed by the long flag names; flags given on the command line override it")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:2222", "SSH listen address, or none to turn the SSH server off")
	fs.StringVar(&f.http, "http", "", "`address` (host:port) to serve the same paths on as a Nix binary cache over HTTP; none: off (default: none)")
	fs.IntVar(&f.httpPriority, "http-priority", 40, "Priority in the HTTP binary cache's nix-cache-info (lower is preferred by Nix)")
	fs.IntVar(&f.httpMaxRequests, "http-max-requests", 256, "HTTP requests served at once; more wait for a slot (open connections are bounded at 16 times this)")
	fs.StringVar(&f.hostKey, "host-key", "state/ssh_host_ed25519_key", "OpenSSH host private key (an ed25519 key is generated if missing)")
	fs.StringVar(&f.authorizedKeys, "authorized-keys", "", "OpenSSH authorized_keys file of the clients allowed in (required unless --stdio)")
	fs.StringVar(&f.mapping, "mapping", "", "mapping file: native path -> cross path (required)")
	fs.StringVar(&f.signingKey, "signing-key", "", "Nix secret signing key file (required)")
	f.upstream.register(fs)
	fs.StringVar(&f.cacheDir, "cache-dir", "state/cache", "directory of rewritten NARs and their path info")
	fs.Var(&f.cacheMaxSize, "cache-max-size", cacheMaxSizeUsage)
	fs.BoolVar(&f.stdio, "stdio", false, "serve one worker-protocol session on stdin/stdout instead of SSH (for use behind OpenSSH as remote-program)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info; warn with --stdio, where stderr is the user's terminal)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text (logfmt key=value lines) or json (one JSON object per line)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to let sessions finish after SIGINT/SIGTERM")
	fs.IntVar(&f.maxConnections, "max-connections", 64, "authenticated SSH connections at once; more wait up to --queue-timeout for one to end")
	fs.IntVar(&f.maxStartups, "max-startups", 32, "SSH connections in the handshake at once; more wait in a queue")
	fs.IntVar(&f.maxStartupsPerSource, "max-startups-per-source", 0, "handshake slots one address (IPv6: /64) may hold (default half of --max-startups)")
	fs.IntVar(&f.maxQueue, "max-queue", 256, "SSH connections waiting for a handshake slot; more are refused")
	fs.IntVar(&f.maxQueuePerSource, "max-queue-per-source", 0, "waiting connections of one address (default half of --max-queue)")
	fs.DurationVar(&f.queueTimeout, "queue-timeout", 30*time.Second, "how long a connection may wait for a handshake slot, or for a connection slot once authenticated")
	fs.StringVar(&f.metrics, "metrics", "", "`address` (host:port) to serve Prometheus metrics on, over HTTP at /metrics; none: off (default: none)")
	fs.StringVar(&f.sshCiphers, "ssh-ciphers", "", "SSH ciphers to offer, separated by commas (default: aes128-gcm@openssh.com,aes256-gcm@openssh.com on x86-64 with AES-NI, else Go's defaults; add chacha20-poly1305@openssh.com or aes128-ctr for clients without AES-GCM)")
	fs.StringVar(&f.remoteStore, "store", "", "with --stdio: what Nix passes for an ssh-ng URL's remote-store= parameter; ignored, the mapping decides what is served")
	return fs, &f
}

// checkLimits refuses limits that would lock every client out or mean
// something else than they say: the SSH server reads zero as its default.
func (f *serveFlags) checkLimits() error {
	for _, l := range []struct {
		flag     string
		v        int64
		zeroOK   bool // zero means "half of the total"
		duration bool
	}{
		{"max-connections", int64(f.maxConnections), false, false},
		{"max-startups", int64(f.maxStartups), false, false},
		{"max-startups-per-source", int64(f.maxStartupsPerSource), true, false},
		{"max-queue", int64(f.maxQueue), false, false},
		{"max-queue-per-source", int64(f.maxQueuePerSource), true, false},
		{"queue-timeout", int64(f.queueTimeout), false, true},
		{"http-max-requests", int64(f.httpMaxRequests), false, false},
		{"http-priority", int64(f.httpPriority), false, false},
	} {
		switch {
		case l.v < 0 || (l.v == 0 && !l.zeroOK):
			want := "at least 1"
			if l.duration {
				want = "positive"
			}
			if l.zeroOK {
				want = "0 (half of the total) or more"
			}
			v := fmt.Sprint(l.v)
			if l.duration {
				v = time.Duration(l.v).String()
			}
			return fmt.Errorf("--%s %s: want %s", l.flag, v, want)
		}
	}
	return nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newServeFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.mapping == "" || f.signingKey == "" {
		return errors.New("--mapping and --signing-key are required")
	}
	// "none" turns a door off, as for --listen, so that a flag can
	// override a configuration file that turns it on.
	for _, addr := range []*string{&f.http, &f.metrics} {
		if *addr == "none" {
			*addr = ""
		}
	}
	sshOff := f.listen == "none"
	if sshOff && f.http == "" && !f.stdio {
		return errors.New("--listen none turns the SSH server off: give --http, or nothing is served")
	}
	if f.stdio && f.http != "" {
		return errors.New("--http is not available with --stdio: serve HTTP from a server process")
	}
	if !f.stdio && !sshOff && f.authorizedKeys == "" {
		return errors.New("--authorized-keys is required")
	}
	if !f.stdio && f.remoteStore != "" {
		return errors.New("--store is only accepted with --stdio")
	}
	if err := f.checkLimits(); err != nil {
		return err
	}
	if f.shutdownTimeout < 0 {
		return fmt.Errorf("--shutdown-timeout %s: want 0 or more", f.shutdownTimeout)
	}
	ciphers, err := sshserver.ParseCiphers(f.sshCiphers)
	if err != nil {
		return fmt.Errorf("--ssh-ciphers: %w", err)
	}
	if f.stdio && len(ciphers) > 0 {
		return errors.New("--ssh-ciphers is not available with --stdio: behind OpenSSH, sshd chooses the cipher")
	}
	if f.stdio && f.metrics != "" {
		return errors.New("--metrics is not available with --stdio: each session is a process of its own; serve metrics from the SSH server")
	}

	// In --stdio mode stdout is the protocol channel: logs go to stderr only,
	// which ssh shows to the Nix user, so only warnings by default.
	level := slog.LevelInfo
	if f.stdio {
		level = slog.LevelWarn
	}
	logger, err := newLogger(stderr, f.logFormat, f.logLevel, level)
	if err != nil {
		return err
	}
	if !f.stdio && !sshOff {
		// Before anything is loaded: a generated host key is 0600, an
		// existing one readable by others is refused like sshd does.
		if err := checkPrivateFile("host key", f.hostKey, true); err != nil {
			return err
		}
	}
	m, stopMetrics, err := startMetrics(ctx, f.metrics, logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	st, closeStore, err := openStore(ctx, storeOptions{mapping: f.mapping, upstream: f.upstream, cacheDir: f.cacheDir, cacheMaxSize: f.cacheMaxSize, signingKey: f.signingKey, metrics: m}, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	proto := &daemonproto.Server{Store: protoStore{st}, Logger: logger, NixVersion: version(), Draining: sshserver.ShuttingDown}

	if f.stdio {
		return serveStdio(ctx, proto, f.shutdownTimeout, logger)
	}

	httpd, err := listenHTTP(f.http, f.httpPriority, f.httpMaxRequests, st, m, logger)
	if err != nil {
		return err
	}
	serving := []any{"listen", f.listen, "mapping", f.mapping, "paths", st.MappedPaths(), "public-key", st.PublicKey()}
	if httpd != nil {
		serving = append(serving, "http", httpd.addr())
	}
	if sshOff {
		logger.Info("serving", serving...)
		return waitHTTP(ctx, httpd, f.shutdownTimeout, logger)
	}
	hostKey, err := sshserver.LoadOrCreateHostKey(f.hostKey)
	if err != nil {
		httpd.shutdown(shutdownContext(f.shutdownTimeout))
		return err
	}
	authorized, err := sshserver.LoadAuthorizedKeys(f.authorizedKeys)
	if err != nil {
		httpd.shutdown(shutdownContext(f.shutdownTimeout))
		return err
	}
	srv := &sshserver.Server{
		HostKey:        hostKey,
		AuthorizedKeys: authorized,
		Handler:        proto.ServeConn,
		Logger:         logger,

		MaxConnections:       f.maxConnections,
		MaxStartups:          f.maxStartups,
		MaxStartupsPerSource: f.maxStartupsPerSource,
		MaxQueue:             f.maxQueue,
		MaxQueuePerSource:    f.maxQueuePerSource,
		QueueTimeout:         f.queueTimeout,
		Ciphers:              ciphers,
	}
	if m != nil {
		proto.Hooks = m.Protocol(metrics.DoorSSH)
		srv.Hooks = m.SSH()
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		httpd.shutdown(shutdownContext(f.shutdownTimeout))
		return fmt.Errorf("listen: %w", err)
	}
	serving[1] = l.Addr().String()
	logger.Info("serving", serving...)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return errors.Join(err, httpd.shutdown(shutdownContext(f.shutdownTimeout)))
	case err := <-httpd.errors():
		srv.Close()
		if serr := <-errc; serr != nil && !errors.Is(serr, sshserver.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	// Both doors drain at once, within one timeout.
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpd.shutdown(sctx) }()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return errors.Join(fmt.Errorf("shutdown: %w", err), <-httpDone)
	}
	if err := <-errc; err != nil && !errors.Is(err, sshserver.ErrServerClosed) {
		return errors.Join(err, <-httpDone)
	}
	return <-httpDone
}

// waitHTTP serves with the HTTP door alone until it fails or ctx ends,
// then lets requests in progress finish within shutdownTimeout.
func waitHTTP(ctx context.Context, httpd *httpDoor, shutdownTimeout time.Duration, logger *slog.Logger) error {
	select {
	case err := <-httpd.errors():
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return httpd.shutdown(sctx)
}

// storeOptions is what serve and prefetch share to open the store.
type storeOptions struct {
	mapping, cacheDir string
	upstream          upstreamFlags
	cacheMaxSize      narcache.Size    // 0: unbounded
	signingKey        string           // "": path info is unsigned
	noReadAhead       bool             // the caller prepares every path itself
	metrics           *metrics.Metrics // nil: none
}

const cacheMaxSizeUsage = "evict the least recently served cache entries once the cache holds more than `SIZE` (such as 50GiB or 500MiB; default: unbounded)"

// openStore assembles the store.
func openStore(ctx context.Context, o storeOptions, logger *slog.Logger) (*store.Store, func(), error) {
	m, err := mapping.Load(o.mapping)
	if err != nil {
		return nil, nil, err
	}
	var key *signature.SecretKey
	if o.signingKey != "" {
		k, err := loadSecretKey(o.signingKey)
		if err != nil {
			return nil, nil, err
		}
		key = &k
	}
	up, closeUpstream, err := o.upstream.open(ctx, logger)
	if err != nil {
		return nil, nil, err
	}
	cache, err := narcache.Open(o.cacheDir, narcache.WithMaxSize(int64(o.cacheMaxSize)))
	if err != nil {
		closeUpstream()
		return nil, nil, err
	}
	observeCache(o.metrics, cache)
	st, err := store.New(store.Config{
		Mapping:     m,
		Upstream:    up,
		Cache:       cache,
		SigningKey:  key,
		Logger:      logger,
		NoReadAhead: o.noReadAhead,
		Hooks:       storeHooks(o.metrics),
	})
	if err != nil {
		cache.Close()
		closeUpstream()
		return nil, nil, err
	}
	// Closing the store cancels its rewrites, and closing the cache waits
	// for a compaction in progress, so that exit does not leave a
	// half-written temporary file behind.
	return st, func() { st.Close(); cache.Close(); closeUpstream() }, nil
}

// newLogger returns a slog logger writing format ("text" or "json") to w,
// at level, or at defaultLevel when level is "".
func newLogger(w io.Writer, format, level string, defaultLevel slog.Level) (*slog.Logger, error) {
	l := defaultLevel
	if level != "" {
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("--log-level: %w", err)
		}
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}

// stdio is the protocol channel of --stdio mode.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// serveStdio serves one session on stdin/stdout. A signal (ctx done)
// drains the session like the SSH server's shutdown: a request in progress
// finishes, an idle session ends at once; after the shutdown timeout the
// request is cancelled too. A panic ends the session with an error on
// stderr rather than a crash dump on the user's terminal.
func serveStdio(ctx context.Context, proto *daemonproto.Server, shutdownTimeout time.Duration, logger *slog.Logger) (err error) {
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownTimeout, cancel) })
	defer stop()
	p := *proto
	p.Draining = func(context.Context) <-chan struct{} { return ctx.Done() }
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				logger.Error("panic while serving", "panic", r, "stack", string(debug.Stack()))
				done <- fmt.Errorf("internal error: %v", r)
			}
		}()
		done <- p.ServeConn(serveCtx, stdio{})
	}()
	select {
	case err = <-done:
	case <-serveCtx.Done():
		// Past the shutdown timeout: stdin cannot be interrupted, so leave
		// the session behind; the process is about to exit.
		return nil
	}
	if ctx.Err() != nil && (err == nil || serveCtx.Err() != nil) {
		return nil // ended by a signal
	}
	return err
}
