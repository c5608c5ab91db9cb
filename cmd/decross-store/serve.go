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
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/sshserver"
	"github.com/decross-store/decross-store/store"
	"github.com/decross-store/decross-store/upstream"
)

type serveFlags struct {
	listen, hostKey, authorizedKeys, mapping, signingKey, upstream, cacheDir string
	logLevel, remoteStore                                                    string
	stdio                                                                    bool
	shutdownTimeout                                                          time.Duration

	// SSH limits: see sshserver.Server.
	maxConnections, maxStartups, maxStartupsPerSource, maxQueue, maxQueuePerSource int
	queueTimeout                                                                   time.Duration
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	fs.StringVar(&f.listen, "listen", "127.0.0.1:2222", "SSH listen address")
	fs.StringVar(&f.hostKey, "host-key", "state/ssh_host_ed25519_key", "OpenSSH host private key (an ed25519 key is generated if missing)")
	fs.StringVar(&f.authorizedKeys, "authorized-keys", "", "OpenSSH authorized_keys file of the clients allowed in (required unless --stdio)")
	fs.StringVar(&f.mapping, "mapping", "", "mapping file: native path -> cross path (required)")
	fs.StringVar(&f.signingKey, "signing-key", "", "Nix secret signing key file (required)")
	fs.StringVar(&f.upstream, "upstream", "daemon", "where cross paths are read: daemon (local nix-daemon socket) or unix:///path/to/socket")
	fs.StringVar(&f.cacheDir, "cache-dir", "state/cache", "directory of rewritten NARs and their path info")
	fs.BoolVar(&f.stdio, "stdio", false, "serve one worker-protocol session on stdin/stdout instead of SSH (for use behind OpenSSH as remote-program)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info; warn with --stdio, where stderr is the user's terminal)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to let sessions finish after SIGINT/SIGTERM")
	fs.IntVar(&f.maxConnections, "max-connections", 64, "authenticated SSH connections at once; more wait up to --queue-timeout for one to end")
	fs.IntVar(&f.maxStartups, "max-startups", 32, "SSH connections in the handshake at once; more wait in a queue")
	fs.IntVar(&f.maxStartupsPerSource, "max-startups-per-source", 0, "handshake slots one address (IPv6: /64) may hold (default half of --max-startups)")
	fs.IntVar(&f.maxQueue, "max-queue", 256, "SSH connections waiting for a handshake slot; more are refused")
	fs.IntVar(&f.maxQueuePerSource, "max-queue-per-source", 0, "waiting connections of one address (default half of --max-queue)")
	fs.DurationVar(&f.queueTimeout, "queue-timeout", 30*time.Second, "how long a connection may wait for a handshake slot, or for a connection slot once authenticated")
	fs.StringVar(&f.remoteStore, "store", "", "with --stdio: what Nix passes for an ssh-ng URL's remote-store= parameter; ignored, the mapping decides what is served")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.mapping == "" || f.signingKey == "" {
		return errors.New("--mapping and --signing-key are required")
	}
	if !f.stdio && f.authorizedKeys == "" {
		return errors.New("--authorized-keys is required")
	}
	if !f.stdio && f.remoteStore != "" {
		return errors.New("--store is only accepted with --stdio")
	}

	// In --stdio mode stdout is the protocol channel: logs go to stderr only,
	// which ssh shows to the Nix user, so only warnings by default.
	level := slog.LevelInfo
	if f.stdio {
		level = slog.LevelWarn
	}
	if f.logLevel != "" {
		if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	st, closeStore, err := openStore(f, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	proto := &daemonproto.Server{Store: st, Logger: logger, NixVersion: version(), Draining: sshserver.ShuttingDown}

	if f.stdio {
		return serveStdio(ctx, proto, f.shutdownTimeout, logger)
	}

	hostKey, err := sshserver.LoadOrCreateHostKey(f.hostKey)
	if err != nil {
		return err
	}
	authorized, err := sshserver.LoadAuthorizedKeys(f.authorizedKeys)
	if err != nil {
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
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("serving", "listen", l.Addr().String(), "mapping", f.mapping, "paths", st.MappedPaths(), "public-key", st.PublicKey())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, sshserver.ErrServerClosed) {
		return err
	}
	return nil
}

// openStore assembles the store from the flags.
func openStore(f serveFlags, logger *slog.Logger) (*store.Store, func(), error) {
	m, err := mapping.Load(f.mapping)
	if err != nil {
		return nil, nil, err
	}
	key, err := loadSecretKey(f.signingKey)
	if err != nil {
		return nil, nil, err
	}
	up, err := upstream.Open(f.upstream)
	if err != nil {
		return nil, nil, err
	}
	cache, err := narcache.Open(f.cacheDir)
	if err != nil {
		up.Close()
		return nil, nil, err
	}
	st, err := store.New(store.Config{
		Mapping:    m,
		Upstream:   up,
		Cache:      cache,
		SigningKey: &key,
		Logger:     logger,
	})
	if err != nil {
		cache.Close()
		up.Close()
		return nil, nil, err
	}
	// Closing the cache waits for a compaction in progress, so that exit
	// does not leave a half-written temporary file behind.
	return st, func() { cache.Close(); up.Close() }, nil
}

func loadSecretKey(path string) (signature.SecretKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key: %w", err)
	}
	k, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
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
