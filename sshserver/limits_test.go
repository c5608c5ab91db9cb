package sshserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// readRefusal reads what the server sends a connection it turns away
// before the handshake: its version line, an unencrypted SSH_MSG_DISCONNECT,
// then the end of the stream. It returns the disconnect's reason code and
// description.
func readRefusal(nc net.Conn) (uint32, string, error) {
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("read the server version: %w", err)
	}
	if line != serverVersion+"\r\n" {
		return 0, "", fmt.Errorf("read %q, want the server version", line)
	}
	return readDisconnect(br)
}

// readDisconnect reads an unencrypted SSH_MSG_DISCONNECT packet and the end
// of the stream after it.
func readDisconnect(br *bufio.Reader) (uint32, string, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, "", fmt.Errorf("no disconnect packet: %w", err)
	}
	n, padding := binary.BigEndian.Uint32(hdr[:4]), int(hdr[4])
	if n > 1024 || (n+4)%8 != 0 || padding < 4 || padding >= int(n) {
		return 0, "", fmt.Errorf("malformed packet header: length %d, padding %d", n, padding)
	}
	rest := make([]byte, n-1)
	if _, err := io.ReadFull(br, rest); err != nil {
		return 0, "", fmt.Errorf("short disconnect packet: %w", err)
	}
	payload := rest[:len(rest)-padding]
	if len(payload) < 9 || payload[0] != msgDisconnect {
		return 0, "", fmt.Errorf("payload %q is not a disconnect", payload)
	}
	code := binary.BigEndian.Uint32(payload[1:5])
	dlen := binary.BigEndian.Uint32(payload[5:9])
	if uint64(dlen)+13 != uint64(len(payload)) {
		return 0, "", fmt.Errorf("payload %q: description length %d does not fit", payload, dlen)
	}
	desc := string(payload[9 : 9+dlen])
	if more, err := br.ReadByte(); err == nil {
		return 0, "", fmt.Errorf("byte %#x after the disconnect, want the end of the stream", more)
	} else if err != io.EOF {
		return 0, "", fmt.Errorf("after the disconnect: %w, want EOF", err)
	}
	return code, desc, nil
}

// refused dials from src and expects the connection to be turned away
// with a description that contains want.
func refused(t testing.TB, src, addr, want string) {
	t.Helper()
	code, desc, err := readRefusal(dialFrom(t, src, addr))
	if err != nil {
		t.Fatalf("connection from %s: %v", src, err)
	}
	if code != disconnectTooManyConnection || !strings.Contains(desc, want) {
		t.Fatalf("connection from %s refused with %d %q, want %d and %q", src, code, desc, disconnectTooManyConnection, want)
	}
}

// startupCounts reads the handshake slots in use and the connections
// waiting for one.
func (e *testEnv) startupCounts() (active, queued int) {
	e.srv.mu.Lock()
	g := e.srv.startups
	e.srv.mu.Unlock()
	if g == nil {
		return 0, 0
	}
	active, queued, _ = g.counts()
	return active, queued
}

// waitQueued waits until n connections wait for a handshake slot: the
// server has accepted them and put them in the queue.
func (e *testEnv) waitQueued(t testing.TB, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d connections queued", n), func() error {
		if _, q := e.startupCounts(); q != n {
			return fmt.Errorf("%d queued", q)
		}
		return nil
	})
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
func TestStalledClientsLeaveConnectionSlots(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxConnections = 1
		s.MaxStartups = 3
		s.MaxStartupsPerSource = 3
	})
	stall(t, "127.0.0.2", env.addr)
	stall(t, "127.0.0.3", env.addr)
	real, err := env.dialSSHFrom(t, "127.0.0.1")
	if err != nil {
		t.Fatalf("real client with two stalled connections open: %v", err)
	}
	echoOK(t, real)
}

// dialResult is the outcome of a client started in the background.
type dialResult struct {
	c   *ssh.Client
	err error
}

func (e *testEnv) dialAsync(t testing.TB, src string) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, err := e.dialSSHFrom(t, src)
		ch <- dialResult{c, err}
	}()
	return ch
}

// A connection over the handshake limit waits for a slot instead of being
// reset, and gets it when one frees.
func TestQueuedUntilSlotFrees(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 1
	})
	holder := stall(t, "127.0.0.2", env.addr)
	done := env.dialAsync(t, "127.0.0.1")
	env.waitQueued(t, 1)
	select {
	case r := <-done:
		t.Fatalf("client finished while the only handshake slot was held: %v", r.err)
	default:
	}
	holder.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("queued client: %v", r.err)
	}
	echoOK(t, r.c)
}

// Many clients from one address at once, far beyond the handshake
// slots, all get in: the rest wait their turn.
func TestBurstFromOneAddressQueues(t *testing.T) {
	const n = 24
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 2
	})
	start := make(chan struct{})
	results := make(chan error, n)
	for i := range n {
		go func() {
			<-start
			c, err := env.dialSSHFrom(t, "127.0.0.1")
			if err != nil {
				results <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			in := fmt.Sprintf("client %d", i)
			if r := run(t, c, "nix-daemon --stdio", in); r.err != nil || r.stdout != reversed(in) {
				results <- fmt.Errorf("client %d: %q %v", i, r.stdout, r.err)
				return
			}
			c.Close()
			results <- nil
		}()
	}
	close(start)
	for range n {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

// Past the queue's bounds, per address and overall, a connection is
// refused at once, with the reason in an SSH disconnect message.
func TestQueueFullRefusedWithReason(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 1
		s.MaxQueue = 2
		s.MaxQueuePerSource = 1
	})
	stall(t, "127.0.0.2", env.addr)
	dialFrom(t, "127.0.0.2", env.addr)
	env.waitQueued(t, 1)
	refused(t, "127.0.0.2", env.addr, "too many connections from 127.0.0.2: 1 in progress and 1 waiting; try again later")
	dialFrom(t, "127.0.0.3", env.addr)
	env.waitQueued(t, 2)
	refused(t, "127.0.0.4", env.addr, "too many connections: 1 in progress and 2 waiting; try again later")

	// What a Go client makes of it.
	_, err := env.dialSSHFrom(t, "127.0.0.5")
	if err == nil || !strings.Contains(err.Error(), `ssh: disconnect, reason 12: "too many connections: 1 in progress and 2 waiting; try again later"`) {
		t.Fatalf("x/crypto client: %v, want the disconnect with its reason", err)
	}
}

// A connection that waits longer than QueueTimeout is refused with the
// reason.
func TestQueueTimeoutRefusedWithReason(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 1
		s.QueueTimeout = 50 * time.Millisecond
	})
	stall(t, "127.0.0.2", env.addr)
	refused(t, "127.0.0.3", env.addr, "too many connections: no handshake slot free within 50ms; try again later")
	if _, q := env.startupCounts(); q != 0 {
		t.Fatalf("%d connections still queued after the timeout", q)
	}
}

// Slots freed while several addresses wait go to the addresses in turn:
// the first waiter of every address comes before the second of any.
func TestQueueServedInTurn(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 1
	})
	holder := stall(t, "127.0.0.9", env.addr)
	var waiters []net.Conn
	for i, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		waiters = append(waiters, dialFrom(t, src, env.addr))
		env.waitQueued(t, i+1)
	}
	a1, a2, a3, b1 := waiters[0], waiters[1], waiters[2], waiters[3]
	for _, next := range []struct {
		name string
		nc   net.Conn
	}{{"first from .2", a1}, {"first from .3", b1}, {"second from .2", a2}, {"third from .2", a3}} {
		holder.Close()
		// Only the connection given the slot gets the server's version.
		next.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(next.nc).ReadString('\n')
		if err != nil || line != serverVersion+"\r\n" {
			t.Fatalf("%s: read %q, %v; want the server version", next.name, line, err)
		}
		holder = next.nc
	}
}

// A flood of idle connections from one address holds at most that
// address's share of the handshake slots and of the queue; the server
// closes every other one, and a client from elsewhere still gets in.
func TestFloodFromOneAddress(t *testing.T) {
	const flood = 300
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxStartups = 4
		s.MaxQueue = 16
		s.Logger = nil // one warning per refused connection
	})
	// Refused connections get a disconnect, then EOF; the others hear the
	// server's version (a slot) or nothing (queued) until the test ends.
	refusals := make(chan error, flood)
	for range flood {
		nc := dialFrom(t, "127.0.0.2", env.addr)
		go func() {
			code, desc, err := readRefusal(nc)
			if errors.Is(err, net.ErrClosed) {
				return // closed by the test's cleanup
			}
			if err == nil && (code != disconnectTooManyConnection || !strings.Contains(desc, "too many connections from 127.0.0.2")) {
				err = fmt.Errorf("refused with %d %q", code, desc)
			}
			refusals <- err
		}()
	}
	const share, queueShare = 2, 8 // half of MaxStartups, half of MaxQueue
	// Slots only go to the first connections accepted and the queue takes
	// the next ones, so this many refusals mean all have been accepted.
	for range flood - share - queueShare {
		if err := <-refusals; err != nil {
			t.Fatalf("flood connection: %v", err)
		}
	}
	// Every connection is accounted for: the rest wait.
	if active, queued := env.startupCounts(); active != share || queued != queueShare {
		t.Fatalf("%d handshakes and %d waiting after the flood; want %d and %d", active, queued, share, queueShare)
	}
	env.srv.mu.Lock()
	tracked := len(env.srv.conns)
	env.srv.mu.Unlock()
	if _, _, sources := env.srv.startups.counts(); tracked != share || sources != 1 {
		t.Fatalf("server tracks %d connections from %d addresses; want %d from 1", tracked, sources, share)
	}
	if l := env.srv.lingering.Load(); l > maxLingering {
		t.Fatalf("%d refused connections draining, over the cap of %d", l, maxLingering)
	}

	c, err := env.dialSSHFrom(t, "127.0.0.1")
	if err != nil {
		t.Fatalf("client from another address during the flood: %v", err)
	}
	echoOK(t, c)
}

// A stalled connection gives its handshake slot back when
// HandshakeTimeout drops it, to the connection waiting for it.
func TestHandshakeTimeoutFreesSlot(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.HandshakeTimeout = 2 * time.Second
		s.MaxStartups = 1
	})
	nc := stall(t, "127.0.0.2", env.addr)
	done := env.dialAsync(t, "127.0.0.1")
	env.waitQueued(t, 1)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("stalled connection: %v (want EOF)", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("client waiting for the slot: %v", r.err)
	}
	echoOK(t, r.c)
}

// An authenticated client beyond MaxConnections waits for a connection
// to end rather than being turned away.
func TestMaxConnectionsWaits(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) { s.MaxConnections = 1 })
	first := env.mustDial(t)
	// The client's handshake can finish before the server counts the
	// connection; a session on it proves the server has.
	echoOK(t, first)
	second := env.mustDial(t) // its handshake completes; its session waits
	session := make(chan result, 1)
	go func() { session <- run(t, second, "nix-daemon --stdio", "ok") }()
	eventually(t, "second connection waiting", func() error {
		if _, q, _ := env.srv.admitted.counts(); q != 1 {
			return fmt.Errorf("%d waiting for a connection slot", q)
		}
		return nil
	})
	select {
	case r := <-session:
		t.Fatalf("second session ran with MaxConnections=1 taken: %q %v", r.stdout, r.err)
	default:
	}
	echoOK(t, first)
	first.Close()
	if r := <-session; r.err != nil || r.stdout != "ko" {
		t.Fatalf("second session after the first connection ended: %q %v", r.stdout, r.err)
	}
}

// When no connection slot frees in time, the waiting client's session is
// refused with the reason, and the client can try again later.
func TestMaxConnectionsTimeoutRefusesSession(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) {
		s.MaxConnections = 1
		s.QueueTimeout = 50 * time.Millisecond
	})
	first := env.mustDial(t)
	echoOK(t, first)
	second := env.mustDial(t)
	r := run(t, second, "nix-daemon --stdio", "ok")
	if want := "decross-store: too many connections: no connection slot free within 50ms; try again later\n"; r.stderr != want || exitStatus(r.err) != 1 || r.stdout != "" {
		t.Fatalf("session beyond MaxConnections: stdout %q, stderr %q, %v; want the reason on stderr and exit status 1", r.stdout, r.stderr, r.err)
	}
	if _, err := second.NewSession(); err == nil || !strings.Contains(err.Error(), "resource shortage") {
		t.Fatalf("second session on the refused connection: %v, want it refused", err)
	}
	first.Close()
	eventually(t, "connection slot freed", func() error {
		c, err := env.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		if r := run(t, c, "nix-daemon --stdio", "ok"); r.err != nil {
			return r.err
		}
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

// A flood of refusals logs at most one line a second, and the next line
// says how many were left out.
func TestRefusalLogIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var r refusalLog
	for range 100 {
		r.warn(log, "connection refused", "reason", "too many")
	}
	if n := strings.Count(buf.String(), "connection refused"); n != 1 {
		t.Fatalf("%d lines for 100 refusals in a burst, want 1:\n%s", n, buf.String())
	}
	r.last = r.last.Add(-time.Second) // as if a second had passed
	r.warn(log, "connection refused", "reason", "too many")
	if !strings.Contains(buf.String(), "refusals_not_logged=99") {
		t.Errorf("the next line does not count the 99 left out:\n%s", buf.String())
	}
}
