package sshserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	return signerOf(t, newEd25519(t))
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func signerOf(t testing.TB, priv ed25519.PrivateKey) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger logs to the test's output, and nowhere once the test is over:
// connection goroutines may still log after Close returns.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.w = nil
}

type testEnv struct {
	srv    *Server
	addr   string
	client ssh.Signer // an authorized client key
	priv   ed25519.PrivateKey
	served chan error // Serve's result
}

// startServer runs a Server on 127.0.0.1:0 with one authorized client key.
// configure may adjust the server before Serve.
func startServer(t testing.TB, h Handler, configure func(*Server)) *testEnv {
	t.Helper()
	priv := newEd25519(t)
	client := signerOf(t, priv)
	srv := &Server{
		HostKey:        newSigner(t),
		AuthorizedKeys: []ssh.PublicKey{client.PublicKey()},
		Handler:        h,
		Logger:         testLogger(t),
	}
	if configure != nil {
		configure(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{srv: srv, addr: l.Addr().String(), client: client, priv: priv, served: make(chan error, 1)}
	go func() { env.served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-env.served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return env
}

func (e *testEnv) dial(auth ...ssh.AuthMethod) (*ssh.Client, error) {
	if len(auth) == 0 {
		auth = []ssh.AuthMethod{ssh.PublicKeys(e.client)}
	}
	return ssh.Dial("tcp", e.addr, &ssh.ClientConfig{
		User:            "nix",
		Auth:            auth,
		HostKeyCallback: ssh.FixedHostKey(e.srv.HostKey.PublicKey()),
		Timeout:         10 * time.Second,
	})
}

func (e *testEnv) mustDial(t testing.TB) *ssh.Client {
	t.Helper()
	c, err := e.dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// reverseHandler reads stdin to EOF and writes it back reversed, so the
// output proves the handler saw exactly this session's input.
func reverseHandler(_ context.Context, rw io.ReadWriter) error {
	data, err := io.ReadAll(rw)
	if err != nil {
		return err
	}
	for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
		data[i], data[j] = data[j], data[i]
	}
	_, err = rw.Write(data)
	return err
}

func reversed(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

type result struct {
	stdout, stderr string
	err            error
}

func run(t testing.TB, c *ssh.Client, cmd, stdin string) result {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdin = strings.NewReader(stdin)
	sess.Stdout = &out
	sess.Stderr = &errb
	err = sess.Run(cmd)
	return result{out.String(), errb.String(), err}
}

func exitStatus(err error) int {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	if err == nil {
		return 0
	}
	return -1
}

func TestExecRunsHandler(t *testing.T) {
	env := startServer(t, reverseHandler, nil)
	c := env.mustDial(t)
	input := strings.Repeat("hello nix store ", 10000) // larger than one window update
	for _, cmd := range []string{
		"nix-daemon --stdio",
		"/nix/var/nix/profiles/default/bin/nix-daemon --stdio --store 'x y' --process-ops",
	} {
		r := run(t, c, cmd, input)
		if r.err != nil {
			t.Fatalf("%s: %v (stderr %q)", cmd, r.err, r.stderr)
		}
		if r.stdout != reversed(input) {
			t.Fatalf("%s: stdout has %d bytes, not the reversed input", cmd, len(r.stdout))
		}
		if r.stderr != "" {
			t.Fatalf("%s: unexpected stderr %q", cmd, r.stderr)
		}
	}
}

func TestHandlerErrorGivesExitStatus1(t *testing.T) {
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		io.WriteString(rw, "partial")
		return errors.New("store path /nix/store/x not valid")
	}, nil)
	r := run(t, env.mustDial(t), "nix-daemon --stdio", "")
	if got := exitStatus(r.err); got != 1 {
		t.Fatalf("exit status %d (%v), want 1", got, r.err)
	}
	if r.stdout != "partial" {
		t.Errorf("stdout %q, want %q", r.stdout, "partial")
	}
	if r.stderr != "decross-store: store path /nix/store/x not valid\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestAuthRefused(t *testing.T) {
	env := startServer(t, reverseHandler, nil)
	tests := []struct {
		name string
		auth ssh.AuthMethod
	}{
		{"unknown key", ssh.PublicKeys(newSigner(t))},
		{"password", ssh.Password("hunter2")},
		{"keyboard-interactive", ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
			return nil, nil
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := env.dial(tt.auth)
			if err == nil {
				c.Close()
				t.Fatal("connection authenticated")
			}
			if !strings.Contains(err.Error(), "unable to authenticate") {
				t.Fatalf("dial error %v, want authentication failure", err)
			}
		})
	}
}

func TestNoAuthorizedKeysRefusesAll(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) { s.AuthorizedKeys = nil })
	if c, err := env.dial(); err == nil {
		c.Close()
		t.Fatal("connection authenticated with no authorized keys")
	}
}

func TestSessionRequestsRefused(t *testing.T) {
	called := make(chan struct{}, 1)
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		called <- struct{}{}
		return nil
	}, nil)
	c := env.mustDial(t)

	tests := []struct {
		name string
		do   func(*ssh.Session) error
	}{
		{"shell", func(s *ssh.Session) error { return s.Shell() }},
		{"pty-req", func(s *ssh.Session) error { return s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}) }},
		{"subsystem", func(s *ssh.Session) error { return s.RequestSubsystem("sftp") }},
		{"env", func(s *ssh.Session) error { return s.Setenv("NIX_PATH", "x") }},
		{"x11-req", sendReq("x11-req", ssh.Marshal(struct {
			Single        bool
			Proto, Cookie string
			Screen        uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0}))},
		{"auth-agent-req", sendReq("auth-agent-req@openssh.com", nil)},
		{"malformed exec", sendReq("exec", []byte{0, 0, 0, 9, 'x'})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if err := tt.do(sess); err == nil {
				t.Fatalf("%s accepted", tt.name)
			}
		})
	}
	select {
	case <-called:
		t.Fatal("handler ran")
	default:
	}
	// The connection is still usable after the refusals.
	if r := run(t, c, "nix-daemon --stdio", ""); r.err != nil {
		t.Fatalf("exec after refusals: %v", r.err)
	}
}

func sendReq(name string, payload []byte) func(*ssh.Session) error {
	return func(s *ssh.Session) error {
		ok, err := s.SendRequest(name, true, payload)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s refused", name)
		}
		return nil
	}
}

func TestGlobalRequestsAndChannelsRefused(t *testing.T) {
	env := startServer(t, reverseHandler, nil)
	c := env.mustDial(t)
	ok, _, err := c.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"127.0.0.1", 0}))
	if err != nil || ok {
		t.Errorf("tcpip-forward: ok=%v err=%v, want refusal", ok, err)
	}
	if nc, err := c.Dial("tcp", env.addr); err == nil {
		nc.Close()
		t.Errorf("direct-tcpip channel accepted")
	}
	for _, typ := range []string{"x11", "auth-agent@openssh.com", "direct-streamlocal@openssh.com"} {
		ch, _, err := c.OpenChannel(typ, nil)
		if err == nil {
			ch.Close()
			t.Errorf("%s channel accepted", typ)
			continue
		}
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
			t.Errorf("%s: %v, want prohibited", typ, err)
		}
	}
}

func TestExecRefused(t *testing.T) {
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		t.Error("handler ran for a refused command")
		return nil
	}, nil)
	c := env.mustDial(t)
	tests := []struct {
		cmd, stderr string
	}{
		{"bash -c id", `decross-store: command "bash" is not supported; this server only runs nix-daemon --stdio (use an ssh-ng:// store URL)`},
		{"nix-store --serve --write", "decross-store: nix-store --serve (the legacy ssh:// store protocol) is not supported; use an ssh-ng:// store URL"},
		{"nix-daemon", "decross-store: nix-daemon must be run with --stdio; use an ssh-ng:// store URL"},
		{"nix-daemon --stdio extra", `decross-store: nix-daemon: unsupported argument "extra"`},
		{"nix-daemon --stdio; rm -rf /", `decross-store: command uses shell syntax (';'), which is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			r := run(t, c, tt.cmd, "")
			if got := exitStatus(r.err); got != 127 {
				t.Fatalf("exit status %d (%v), want 127", got, r.err)
			}
			if r.stderr != tt.stderr+"\n" {
				t.Errorf("stderr %q, want %q", r.stderr, tt.stderr+"\n")
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestConcurrentSessions(t *testing.T) {
	const n = 20
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		started.Done()
		<-release // all sessions are open at once before any finishes
		return reverseHandler(ctx, rw)
	}, nil) // the defaults take this many clients from one address at once

	results := make(chan error, n)
	for i := range n {
		go func() {
			c, err := env.dial()
			if err != nil {
				started.Done()
				results <- err
				return
			}
			defer c.Close()
			in := fmt.Sprintf("client %d says %s", i, strings.Repeat("x", i*1000))
			r := run(t, c, "nix-daemon --stdio", in)
			switch {
			case r.err != nil:
				results <- fmt.Errorf("client %d: %v", i, r.err)
			case r.stdout != reversed(in):
				results <- fmt.Errorf("client %d: got another session's output", i)
			default:
				results <- nil
			}
		}()
	}
	started.Wait()
	close(release)
	for range n {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

func TestSessionsPerConnection(t *testing.T) {
	release := make(chan struct{})
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		<-release
		return nil
	}, func(s *Server) { s.MaxSessionsPerConn = 2 })
	c := env.mustDial(t)
	var sessions []*ssh.Session
	for range 2 {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Start("nix-daemon --stdio"); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	if s, err := c.NewSession(); err == nil {
		s.Close()
		t.Fatal("third session accepted with MaxSessionsPerConn=2")
	}
	close(release)
	for _, s := range sessions {
		if err := s.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHandlerPanicIsContained(t *testing.T) {
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(rw, buf); err != nil {
			return err
		}
		if string(buf) == "panic" {
			panic("handler bug")
		}
		_, err := rw.Write(buf)
		return err
	}, nil)
	c := env.mustDial(t)
	r := run(t, c, "nix-daemon --stdio", "panic")
	if got := exitStatus(r.err); got != 1 {
		t.Fatalf("exit status %d (%v), want 1", got, r.err)
	}
	if r.stderr != "decross-store: internal server error\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	// Same connection and a fresh one both still work.
	if r := run(t, c, "nix-daemon --stdio", "hello"); r.err != nil || r.stdout != "hello" {
		t.Fatalf("after panic, same connection: %q %v", r.stdout, r.err)
	}
	if r := run(t, env.mustDial(t), "nix-daemon --stdio", "again"); r.err != nil || r.stdout != "again" {
		t.Fatalf("after panic, new connection: %q %v", r.stdout, r.err)
	}
}

func TestShutdownWaitsForSession(t *testing.T) {
	inHandler := make(chan struct{})
	release := make(chan struct{})
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		close(inHandler)
		<-release
		_, err := io.WriteString(rw, "done")
		return err
	}, nil)
	c := env.mustDial(t)
	idle := env.mustDial(t) // no session: closed by Shutdown right away

	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		t.Fatal(err)
	}
	<-inHandler

	shut := make(chan error, 1)
	go func() { shut <- env.srv.Shutdown(context.Background()) }()

	// Serve stops first; the idle connection goes; Shutdown keeps waiting.
	select {
	case err := <-env.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
		env.served <- err // for the cleanup check
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	idleDone := make(chan struct{})
	go func() { idle.Wait(); close(idleDone) }()
	select {
	case <-idleDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown left an idle connection open")
	}
	if _, err := env.dial(); err == nil {
		t.Fatal("new connection accepted during Shutdown")
	}
	if _, err := c.NewSession(); err == nil {
		t.Fatal("new session accepted during Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a session was active", err)
	default:
	}

	close(release)
	if err := sess.Wait(); err != nil {
		t.Fatalf("session: %v", err)
	}
	if out.String() != "done" {
		t.Fatalf("stdout %q", out.String())
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the session ended")
	}
}

func TestShutdownDeadlineCancelsSessions(t *testing.T) {
	inHandler := make(chan struct{})
	handlerErr := make(chan error, 1)
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		close(inHandler)
		<-ctx.Done()
		handlerErr <- ctx.Err()
		return ctx.Err()
	}, nil)
	c := env.mustDial(t)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		t.Fatal(err)
	}
	<-inHandler
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := env.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if err := <-handlerErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context: %v", err)
	}
	if err := sess.Wait(); err == nil {
		t.Fatal("session ended cleanly after forced shutdown")
	}
}

func TestClientDisconnectCancelsHandler(t *testing.T) {
	inHandler := make(chan struct{})
	handlerErr := make(chan error, 1)
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		close(inHandler)
		<-ctx.Done()
		handlerErr <- ctx.Err()
		return nil
	}, nil)
	c, err := env.dial()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		t.Fatal(err)
	}
	<-inHandler
	c.Close()
	select {
	case err := <-handlerErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler context: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler context not cancelled after disconnect")
	}
}

func TestHandshakeTimeout(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.HandshakeTimeout = 2 * time.Second
		s.MaxConnections = 2
	})
	// A client that connects and never speaks.
	stalled, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	// It does not block a real client meanwhile.
	if r := run(t, env.mustDial(t), "nix-daemon --stdio", "abc"); r.stdout != "cba" {
		t.Fatalf("got %q, %v", r.stdout, r.err)
	}

	// The server drops it once the timeout passes: after the version
	// banner the read hits EOF.
	stalled.SetDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(stalled)
	if err != nil {
		t.Fatalf("stalled connection: %v (want EOF)", err)
	}
	if !bytes.HasPrefix(data, []byte(serverVersion+"\r\n")) {
		t.Fatalf("server sent %q", data)
	}
}

func TestConnectionWithoutSessionClosed(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) { s.HandshakeTimeout = 2 * time.Second })
	idle := env.mustDial(t)
	used := env.mustDial(t)
	sess, err := used.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- idle.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("authenticated connection without a session stayed open")
	}
	// The connection running a session outlives the timeout.
	io.WriteString(stdin, "still here")
	stdin.Close()
	if err := sess.Wait(); err != nil {
		t.Fatalf("session on the used connection: %v", err)
	}
	if out.String() != reversed("still here") {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestServeAfterClose(t *testing.T) {
	srv := &Server{HostKey: newSigner(t), Handler: reverseHandler}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v", err)
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Serve left the listener open")
	}
	if err := srv.ListenAndServe("127.0.0.1:0"); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ListenAndServe after Close = %v", err)
	}
}

func TestServeRequiresConfig(t *testing.T) {
	tests := []struct {
		name string
		srv  *Server
		want string
	}{
		{"no host key", &Server{Handler: reverseHandler}, "HostKey is nil"},
		{"no handler", &Server{HostKey: newSigner(t)}, "Handler is nil"},
		{"negative limit", &Server{HostKey: newSigner(t), Handler: reverseHandler, MaxStartups: -1}, "Server.MaxStartups is negative"},
		{"negative timeout", &Server{HostKey: newSigner(t), Handler: reverseHandler, QueueTimeout: -time.Second}, "Server.QueueTimeout is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.srv.Serve(l); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Serve = %v, want %q", err, tt.want)
			}
		})
	}
}
