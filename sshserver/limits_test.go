package sshserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// dialFrom opens a TCP connection to addr from the loopback address src
// (any of 127.0.0.0/8 works on Linux), so tests can act as several hosts.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// stall connects from src and never speaks. It returns once the server has
// sent its version line, which proves the connection was admitted.
func stall(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	nc := dialFrom(t, src, addr)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || line != serverVersion+"\r\n" {
		t.Fatalf("stalled client from %s: read %q, %v; want the server version", src, line, err)
	}
	return nc
}

// refusedAtOnce checks that the server closes a fresh connection from src
// without sending anything.
func refusedAtOnce(t testing.TB, src, addr string) {
	t.Helper()
	nc := dialFrom(t, src, addr)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(nc)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("connection from %s: %v, want it closed at once", src, err)
	}
	if len(data) != 0 {
		t.Fatalf("connection from %s got %q, want it closed at once", src, data)
	}
}

// dialSSHFrom runs a full SSH client from src.
func (e *testEnv) dialSSHFrom(t testing.TB, src string) (*ssh.Client, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	cc, chans, reqs, err := ssh.NewClientConn(nc, e.addr, &ssh.ClientConfig{
		User:            "nix",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(e.client)},
		HostKeyCallback: ssh.FixedHostKey(e.srv.HostKey.PublicKey()),
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := ssh.NewClient(cc, chans, reqs)
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// eventually retries f until it succeeds, for state the server updates
// asynchronously (a closed connection being untracked).
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echoOK(t testing.TB, c *ssh.Client) {
	t.Helper()
	if r := run(t, c, "nix-daemon --stdio", "ok"); r.err != nil || r.stdout != "ko" {
		t.Fatalf("session: %q %v", r.stdout, r.err)
	}
}

// Clients that connect and never speak must not lock out real clients:
// they fill only the handshake slots, not MaxConnections.
func TestUnauthenticatedLimit(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxConnections = 1
		s.MaxUnauthenticated = 3
		s.MaxUnauthenticatedPerIP = 3
	})
	// Before the fix, one such client would have used the only slot of
	// MaxConnections=1 for a whole HandshakeTimeout.
	first := stall(t, "127.0.0.2", env.addr)
	stall(t, "127.0.0.3", env.addr)

	real, err := env.dialSSHFrom(t, "127.0.0.1")
	if err != nil {
		t.Fatalf("real client with two stalled connections open: %v", err)
	}
	echoOK(t, real)

	// The handshake slots are full now; more are closed on accept.
	stall(t, "127.0.0.4", env.addr)
	refusedAtOnce(t, "127.0.0.5", env.addr)

	// MaxConnections still binds authenticated clients, and the refusal
	// comes as an authentication failure, not a dropped session.
	if err := func() error {
		// Free a handshake slot so this client reaches authentication.
		first.Close()
		var c *ssh.Client
		var err error
		eventually(t, "handshake slot freed", func() error {
			c, err = env.dialSSHFrom(t, "127.0.0.6")
			if err != nil && !strings.Contains(err.Error(), "unable to authenticate") {
				return err
			}
			return nil
		})
		if err == nil {
			c.Close()
			return errors.New("second authenticated connection accepted with MaxConnections=1")
		}
		return nil
	}(); err != nil {
		t.Fatal(err)
	}
	echoOK(t, real)

	// Once the authenticated client leaves, its slot is free again.
	real.Close()
	eventually(t, "connection slot freed", func() error {
		c, err := env.dialSSHFrom(t, "127.0.0.1")
		if err != nil {
			return err
		}
		echoOK(t, c)
		return nil
	})
}

func TestUnauthenticatedPerIPLimit(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxUnauthenticatedPerIP = 2
	})
	stall(t, "127.0.0.2", env.addr)
	stall(t, "127.0.0.2", env.addr)
	refusedAtOnce(t, "127.0.0.2", env.addr)
	refusedAtOnce(t, "127.0.0.2", env.addr)

	// Other addresses, and other clients at all, still get in.
	c, err := env.dialSSHFrom(t, "127.0.0.1")
	if err != nil {
		t.Fatalf("client from another address: %v", err)
	}
	echoOK(t, c)
}

// A stalled connection gives its handshake slot back when
// HandshakeTimeout drops it.
func TestHandshakeTimeoutFreesSlot(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.HandshakeTimeout = 2 * time.Second
		s.MaxUnauthenticated = 1
	})
	nc := stall(t, "127.0.0.2", env.addr)
	refusedAtOnce(t, "127.0.0.3", env.addr)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("stalled connection: %v (want EOF)", err)
	}
	eventually(t, "client after the timeout", func() error {
		c, err := env.dialSSHFrom(t, "127.0.0.1")
		if err != nil {
			return err
		}
		echoOK(t, c)
		return nil
	})
}

// writeAuthorizedKeys writes lines (each an options prefix, possibly empty)
// for the test client's key and loads the file as serve does.
func writeAuthorizedKeys(t *testing.T, pub ssh.PublicKey, prefixes ...string) []ssh.PublicKey {
	t.Helper()
	key := string(ssh.MarshalAuthorizedKey(pub))
	var b strings.Builder
	for _, p := range prefixes {
		if p != "" {
			b.WriteString(p + " ")
		}
		b.WriteString(key)
	}
	path := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadAuthorizedKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestAuthorizedKeyRestrictionsEnforced(t *testing.T) {
	yesterday := time.Now().Add(-24 * time.Hour).Format("20060102")
	nextYear := time.Now().AddDate(1, 0, 0).Format("20060102")
	tests := []struct {
		name     string
		lines    []string
		src      string
		admitted bool
	}{
		{"from matches", []string{`from="127.0.0.1"`}, "127.0.0.1", true},
		{"from network", []string{`from="127.0.0.0/8,!127.0.0.9"`}, "127.0.0.2", true},
		{"from excludes", []string{`from="127.0.0.0/8,!127.0.0.9"`}, "127.0.0.9", false},
		{"from elsewhere", []string{`from="10.0.0.0/8"`}, "127.0.0.1", false},
		{"from wildcard", []string{`from="127.0.0.?"`}, "127.0.0.3", true},
		{"expired", []string{`expiry-time="` + yesterday + `"`}, "127.0.0.1", false},
		{"not yet expired", []string{`restrict,expiry-time="` + nextYear + `"`}, "127.0.0.1", true},
		{"second line permits", []string{`from="10.0.0.1"`, `from="127.0.0.4"`}, "127.0.0.4", true},
		{"no line permits", []string{`from="10.0.0.1"`, `expiry-time="` + yesterday + `",from="127.0.0.4"`}, "127.0.0.4", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startServer(t, reverseHandler, func(s *Server) {
				// startServer authorized the client's key; restrict it.
				s.AuthorizedKeys = writeAuthorizedKeys(t, s.AuthorizedKeys[0], tt.lines...)
			})
			c, err := env.dialSSHFrom(t, tt.src)
			if !tt.admitted {
				if err == nil {
					t.Fatal("client admitted")
				}
				if !strings.Contains(err.Error(), "unable to authenticate") {
					t.Fatalf("dial: %v, want authentication failure", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			echoOK(t, c)
		})
	}
}

// TestShuttingDownStopsIdleSession runs a handler written the way
// ShuttingDown is meant to be used: read each request on a goroutine, stop
// when shutdown begins while waiting for one. An idle session then ends
// at once while a request in progress is finished.
func TestShuttingDownStopsIdleSession(t *testing.T) {
	inRequest := make(chan struct{})
	release := make(chan struct{})
	env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
		type request struct {
			n   uint64
			err error
		}
		for {
			next := make(chan request, 1)
			go func() {
				var r request
				r.err = binary.Read(rw, binary.LittleEndian, &r.n)
				next <- r
			}()
			var r request
			select {
			case r = <-next:
			case <-ShuttingDown(ctx):
				select {
				case r = <-next: // it arrived meanwhile: serve it
				default:
					return nil
				}
			}
			if errors.Is(r.err, io.EOF) {
				return nil
			}
			if r.err != nil {
				return r.err
			}
			if r.n == 0 { // a slow request
				inRequest <- struct{}{}
				<-release
			}
			if err := binary.Write(rw, binary.LittleEndian, r.n+1); err != nil {
				return err
			}
		}
	}, nil)

	type client struct {
		sess *ssh.Session
		in   io.WriteCloser
		out  io.Reader
	}
	open := func() client {
		sess, err := env.mustDial(t).NewSession()
		if err != nil {
			t.Fatal(err)
		}
		in, _ := sess.StdinPipe()
		out, _ := sess.StdoutPipe()
		if err := sess.Start("nix-daemon --stdio"); err != nil {
			t.Fatal(err)
		}
		return client{sess, in, out}
	}
	call := func(c client, n uint64) uint64 {
		t.Helper()
		if err := binary.Write(c.in, binary.LittleEndian, n); err != nil {
			t.Fatal(err)
		}
		var got uint64
		if err := binary.Read(c.out, binary.LittleEndian, &got); err != nil {
			t.Fatal(err)
		}
		return got
	}

	idle, busy := open(), open()
	if got := call(idle, 41); got != 42 {
		t.Fatalf("got %d, want 42", got)
	}
	if err := binary.Write(busy.in, binary.LittleEndian, uint64(0)); err != nil {
		t.Fatal(err)
	}
	<-inRequest

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- env.srv.Shutdown(ctx)
	}()

	// The idle session ends cleanly without waiting for the deadline.
	if err := idle.sess.Wait(); err != nil {
		t.Fatalf("idle session: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was in progress", err)
	default:
	}
	// The request in progress completes, then that session ends too.
	close(release)
	var got uint64
	if err := binary.Read(busy.out, binary.LittleEndian, &got); err != nil || got != 1 {
		t.Fatalf("busy session reply %d, %v; want 1", got, err)
	}
	if err := busy.sess.Wait(); err != nil {
		t.Fatalf("busy session: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestShuttingDownChannel(t *testing.T) {
	if ch := ShuttingDown(context.Background()); ch != nil {
		t.Fatal("ShuttingDown of an unrelated context is not nil")
	}
	for _, stop := range []string{"Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			got := make(chan (<-chan struct{}), 1)
			env := startServer(t, func(ctx context.Context, rw io.ReadWriter) error {
				got <- ShuttingDown(ctx)
				io.Copy(io.Discard, rw)
				return nil
			}, nil)
			sess, err := env.mustDial(t).NewSession()
			if err != nil {
				t.Fatal(err)
			}
			if err := sess.Start("nix-daemon --stdio"); err != nil {
				t.Fatal(err)
			}
			ch := <-got
			select {
			case <-ch:
				t.Fatal("ShuttingDown ready before shutdown")
			default:
			}
			if stop == "Close" {
				env.srv.Close()
			} else {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // return at once; the channel must be closed regardless
				env.srv.Shutdown(ctx)
			}
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("ShuttingDown not ready after %s", stop)
			}
		})
	}
}
