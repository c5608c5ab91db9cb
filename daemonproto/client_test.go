package daemonproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// cmdConn joins a subprocess's stdin and stdout into one connection.
type cmdConn struct {
	io.Reader
	io.WriteCloser
	cmd *exec.Cmd
}

func (c *cmdConn) Close() error {
	err := c.WriteCloser.Close()
	_ = c.cmd.Wait()
	return err
}

// startDaemon runs `nix-daemon --stdio` and connects a Client to it.
func startDaemon(t *testing.T) *Client {
	t.Helper()
	cmd := exec.Command("nix-daemon", "--stdio")
	cmd.Env = append(cmd.Environ(), "NIX_CONFIG="+nixConfig)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := NewClient(ctx, &cmdConn{Reader: out, WriteCloser: in, cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestClientRealDaemon reads from the real Nix 2.8 daemon and compares with
// what the nix commands report.
func TestClientRealDaemon(t *testing.T) {
	requireNix(t)
	p := addToNixStore(t, "decross-client.txt", "read by the daemonproto client\n")
	want := pathInfoJSON(t, nil, p).toPathInfo(t)
	dump := mustNix(t, nil, "nix-store", "--dump", p)
	ctx := t.Context()
	c := startDaemon(t)
	// "nix-daemon (Nix) 2.8.0": the version is the last word.
	fields := strings.Fields(mustNix(t, nil, "nix-daemon", "--version"))
	if v := c.DaemonVersion(); len(fields) == 0 || v != fields[len(fields)-1] {
		t.Errorf("daemon version %q, nix-daemon --version says %q", v, fields)
	}

	got, err := c.QueryPathInfo(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if got.References == nil {
		got.References = []string{}
	}
	if want.References == nil {
		want.References = []string{}
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("QueryPathInfo\n%+v\nwant (nix path-info --json)\n%+v", *got, want)
	}
	if info, err := c.QueryPathInfo(ctx, missingPath); info != nil || err != nil {
		t.Errorf("QueryPathInfo(missing) = %v, %v", info, err)
	}
	if ok, err := c.IsValidPath(ctx, p); !ok || err != nil {
		t.Errorf("IsValidPath = %v, %v", ok, err)
	}
	if ok, err := c.IsValidPath(ctx, missingPath); ok || err != nil {
		t.Errorf("IsValidPath(missing) = %v, %v", ok, err)
	}
	hashPart := strings.TrimPrefix(p, storePrefix)[:32]
	if got, err := c.QueryPathFromHashPart(ctx, hashPart); got != p || err != nil {
		t.Errorf("QueryPathFromHashPart = %q, %v", got, err)
	}
	if got, err := c.QueryPathFromHashPart(ctx, "00000000000000000000000000000000"); got != "" || err != nil {
		t.Errorf("QueryPathFromHashPart(miss) = %q, %v", got, err)
	}
	if _, err := c.QueryPathInfo(ctx, "/tmp/foo"); err == nil {
		t.Error("QueryPathInfo accepted a path outside the store")
	}
	// A NAR read to its end leaves the connection in sync for the next
	// request.
	for range 2 {
		rc, err := c.NarFromPath(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.IsValidPath(ctx, p); err == nil {
			t.Error("client usable while a NAR reader holds it")
		}
		nar, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if string(nar) != dump {
			t.Errorf("NarFromPath differs from nix-store --dump")
		}
		if err := rc.Close(); err != nil {
			t.Error(err)
		}
		if ok, err := c.IsValidPath(ctx, p); !ok || err != nil {
			t.Fatalf("IsValidPath after a whole NAR = %v, %v; want the connection reusable", ok, err)
		}
	}
	// A reader closed early leaves the connection out of sync: closed.
	rc, err := c.NarFromPath(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if c.Usable() {
		t.Error("client usable after a NAR reader was closed early")
	}
	if _, err := c.IsValidPath(ctx, p); err == nil {
		t.Error("client answered after a NAR reader was closed early")
	}
}

// TestClientNarFromPathMissing: the daemon's answer to NarFromPath of an
// invalid path cannot be skipped, so the error closes the connection.
func TestClientNarFromPathMissing(t *testing.T) {
	requireNix(t)
	c := startDaemon(t)
	var de *DaemonError
	if _, err := c.NarFromPath(t.Context(), missingPath); !errors.As(err, &de) || !strings.Contains(de.Message, "is not valid") {
		t.Errorf("NarFromPath(missing) = %v, want a daemon error saying the path is not valid", err)
	}
	if c.Usable() {
		t.Error("client usable after NarFromPath of a missing path")
	}
}

// TestClientOwnServer runs the client against this package's server, which
// negotiates 1.38 with a feature exchange.
func TestClientOwnServer(t *testing.T) {
	a, b := net.Pipe()
	srv := &Server{Store: fixtureStore(), NixVersion: "decross-store 0.1"}
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(t.Context(), b) }()
	ctx := t.Context()
	c, err := NewClient(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if c.DaemonVersion() != "decross-store 0.1" {
		t.Errorf("version %q", c.DaemonVersion())
	}
	want := fixtureStore().Paths[helloPath].Info
	got, err := c.QueryPathInfo(ctx, helloPath)
	if err != nil || !reflect.DeepEqual(got.References, want.References) || got.NarHash != want.NarHash ||
		got.Deriver != want.Deriver || got.NarSize != want.NarSize || !got.Ultimate {
		t.Errorf("QueryPathInfo = %+v, %v", got, err)
	}
	var de *DaemonError
	if _, err := c.QueryPathInfo(ctx, failingPath); !errors.As(err, &de) || !strings.Contains(de.Message, "injected") {
		t.Errorf("QueryPathInfo(failing) = %v", err)
	}
	// A daemon error leaves the connection usable.
	rc, err := c.NarFromPath(ctx, greetingPath)
	if err != nil {
		t.Fatal(err)
	}
	nar := make([]byte, len(greetingNAR))
	if _, err := io.ReadFull(rc, nar); err != nil || !bytes.Equal(nar, greetingNAR) {
		t.Errorf("NAR %q, %v", nar, err)
	}
	_ = rc.Close()
	if got, err := c.QueryPathInfo(ctx, helloPath); err != nil || got == nil {
		t.Errorf("QueryPathInfo after a whole NAR = %+v, %v", got, err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("server: %v", err)
	}
}

// replyConn plays canned daemon bytes and records what the client writes.
type replyConn struct {
	io.Reader
	sent bytes.Buffer
}

func (c *replyConn) Write(p []byte) (int, error) { return c.sent.Write(p) }

func (*replyConn) Close() error { return nil }

// daemonHello is a daemon's handshake reply at protocol 1.m.
func daemonHello(m uint64) *enc {
	e := (&enc{}).u64(workerMagic2, v(m))
	if m >= 38 {
		e.strs()
	}
	if m >= 33 {
		e.str("2.99")
	}
	if m >= 35 {
		e.u64(1)
	}
	return e.u64(stderrLast)
}

func TestClientReplies(t *testing.T) {
	structured := func(e *enc, msg string, traces ...string) *enc {
		e.u64(stderrError).str("Error").u64(0).str("Error", msg).u64(0, uint64(len(traces)))
		for _, tr := range traces {
			e.u64(0).str(tr)
		}
		return e
	}
	tests := []struct {
		name       string
		reply      *enc
		valid      bool
		daemonErr  string // expected *DaemonError message
		brokenConn bool   // any other error
	}{
		{"valid after logs", daemonHello(34).u64(stderrNext).str("log\n").
			u64(stderrStartActivity, 1, 3, 102).str("realising").u64(2, 0, 5, 1).str("x").u64(0).
			u64(stderrResult, 1, 105, 1, 0, 7).u64(stderrStopActivity, 1).
			u64(stderrLast, 1), true, "", false},
		{"valid at 1.38", daemonHello(38).u64(stderrLast, 1), true, "", false},
		{"old error", daemonHello(21).u64(stderrError).str("\x1b[31;1merror:\x1b[0m boom").u64(1), false, "error: boom", false},
		{"structured error", structured(daemonHello(34), "path '\x1b[35;1m/nix/store/x\x1b[0m' broke", "trace"), false, "path '/nix/store/x' broke", false},
		{"unknown message", daemonHello(34).u64(0x1234), false, "", true},
		{"read request", daemonHello(34).u64(stderrRead, 8), false, "", true},
		{"error with position", daemonHello(34).u64(stderrError).str("Error").u64(0).str("Error", "m").u64(1), false, "", true},
		{"huge log line", daemonHello(34).u64(stderrNext, 1<<60), false, "", true},
		{"truncated", daemonHello(34).u64(stderrLast), false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &replyConn{Reader: bytes.NewReader(tt.reply.Bytes())}
			c, err := NewClient(t.Context(), conn)
			if err != nil {
				t.Fatal(err)
			}
			ok, err := c.IsValidPath(t.Context(), greetingPath)
			var de *DaemonError
			switch {
			case tt.daemonErr != "":
				if !errors.As(err, &de) || de.Message != tt.daemonErr {
					t.Fatalf("err %v, want daemon error %q", err, tt.daemonErr)
				}
				if c.broken != nil {
					t.Fatalf("daemon error marked the connection broken")
				}
			case tt.brokenConn:
				if err == nil || errors.As(err, &de) || c.broken == nil {
					t.Fatalf("err %v, want a broken connection", err)
				}
			case err != nil || ok != tt.valid:
				t.Fatalf("IsValidPath = %v, %v", ok, err)
			}
		})
	}
}

func TestClientHandshakeReject(t *testing.T) {
	for name, reply := range map[string]*enc{
		"bad magic":   (&enc{}).u64(1, v(34)),
		"too old":     (&enc{}).u64(workerMagic2, v(20)),
		"error reply": (&enc{}).u64(workerMagic2, v(34)).str("2.8.0").u64(stderrError).str("Error").u64(0).str("Error", "no").u64(0, 0),
	} {
		if _, err := NewClient(t.Context(), &replyConn{Reader: bytes.NewReader(reply.Bytes())}); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}
}

// endless repeats unit for ever.
type endless struct {
	unit []byte
	off  int
}

func (e *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], e.unit[e.off:])
		n += c
		e.off = (e.off + c) % len(e.unit)
	}
	return n, nil
}

// TestClientCapsListBytes: a daemon announcing a million long signatures
// is cut off once the list passes its byte budget, rather than being
// followed for gigabytes.
func TestClientCapsListBytes(t *testing.T) {
	prefix := daemonHello(34).u64(stderrLast, 1).str("", "sha256:"+strings.Repeat("0", 64)).u64(0, 0, 1, 0, 1<<20)
	sig := (&enc{}).str(strings.Repeat("s", maxShortLen)).Bytes()
	conn := &replyConn{Reader: io.MultiReader(bytes.NewReader(prefix.Bytes()), &endless{unit: sig})}
	c, err := NewClient(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.QueryPathInfo(t.Context(), greetingPath)
	if err == nil || !strings.Contains(err.Error(), "signatures: list larger than") {
		t.Fatalf("err = %v, want the signature list refused", err)
	}
}

// TestClientNarStreamEndsAtNarSize: the NAR reader ends after the narSize
// bytes the path info announced, leaving what follows unread (a caller
// copying to EOF must not wait on the connection), and a stream cut short
// is an unexpected EOF.
func TestClientNarStreamEndsAtNarSize(t *testing.T) {
	nar := []byte("0123456789abcdef")
	reply := func(body []byte) io.Reader {
		e := pathInfoFields(daemonHello(34).u64(stderrLast, 1), uint64(len(nar)))
		e.u64(stderrLast).write(body)
		return bytes.NewReader(e.Bytes())
	}
	tests := []struct {
		name    string
		body    []byte
		want    []byte
		wantErr error
	}{
		{"exact", nar, nar, nil},
		{"more after the NAR", append(append([]byte(nil), nar...), "next reply"...), nar, nil},
		{"cut short", nar[:10], nar[:10], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(t.Context(), &replyConn{Reader: reply(tt.body)})
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.NarFromPath(t.Context(), greetingPath)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if !errors.Is(err, tt.wantErr) || !bytes.Equal(got, tt.want) {
				t.Fatalf("ReadAll = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// A narSize of 0 (a path registered without one) says nothing about where
// the NAR ends: the connection is not used again after it.
func TestClientNarSizeZeroIsNotReused(t *testing.T) {
	e := pathInfoFields(daemonHello(34).u64(stderrLast, 1), 0)
	e.u64(stderrLast).write([]byte("a NAR the database does not size"))
	c, err := NewClient(t.Context(), &replyConn{Reader: bytes.NewReader(e.Bytes())})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.NarFromPath(t.Context(), greetingPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if c.Usable() {
		t.Error("client usable after a NAR of unknown length")
	}
}

// pipeDaemon reads both requests of NarFromPath before it answers the
// first: a client that waited for the QueryPathInfo reply before sending
// NarFromPath would never get one.
func TestClientNarFromPathOneRoundTrip(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	nar := []byte("0123456789abcdef")
	go func() {
		defer server.Close()
		r := wireReader{r: bufio.NewReader(server)}
		if _, err := r.u64(); err != nil { // client magic
			return
		}
		hello := daemonHello(34).Bytes()
		if _, err := server.Write(hello); err != nil {
			return
		}
		for range 3 { // version, affinity, reserveSpace
			if _, err := r.u64(); err != nil {
				return
			}
		}
		for _, want := range []uint64{opQueryPathInfo, opNarFromPath} {
			op, err := r.u64()
			if err != nil || op != want {
				return
			}
			if _, err := r.str("path", 1024); err != nil {
				return
			}
		}
		e := pathInfoFields((&enc{}).u64(stderrLast, 1), uint64(len(nar)))
		e.u64(stderrLast).write(nar)
		_, _ = server.Write(e.Bytes())
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := NewClient(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.NarFromPath(ctx, greetingPath)
	if err != nil {
		t.Fatalf("NarFromPath: %v (the client waited for a reply before sending both requests?)", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, nar) {
		t.Fatalf("NAR %q, %v", got, err)
	}
}
