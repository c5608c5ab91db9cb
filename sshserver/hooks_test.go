package sshserver

import (
	"strings"
	"testing"
	"time"
)

// hookEvents records what a Server reports, in order. Its buffer is far
// larger than any test here needs, so the server never blocks on it.
type hookEvents chan string

func newHookEvents() hookEvents { return make(hookEvents, 1000) }

func (h hookEvents) ConnectionOpened() { h <- "connection opened" }
func (h hookEvents) ConnectionClosed() { h <- "connection closed" }
func (h hookEvents) SessionStarted()   { h <- "session started" }
func (h hookEvents) SessionEnded()     { h <- "session ended" }
func (h hookEvents) Refused(l Limit)   { h <- "refused " + string(l) }

// next returns the next event, failing the test when none comes.
func (h hookEvents) next(t testing.TB) string {
	t.Helper()
	select {
	case e := <-h:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no hook event within 10s")
		return ""
	}
}

// await skips events until want.
func (h hookEvents) await(t testing.TB, want string) {
	t.Helper()
	var seen []string
	for {
		select {
		case e := <-h:
			if e == want {
				return
			}
			seen = append(seen, e)
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q within 10s; got %q", want, seen)
		}
	}
}

// A connection with one session reports, in order, the connection and
// the session opening and closing.
func TestHooksConnectionAndSession(t *testing.T) {
	h := newHookEvents()
	env := startServer(t, reverseHandler, func(s *Server) { s.Hooks = h })
	c := env.mustDial(t)
	echoOK(t, c)
	c.Close()
	for _, want := range []string{"connection opened", "session started", "session ended", "connection closed"} {
		if got := h.next(t); got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
	}
}

// Each limit that turns a connection or session away is reported as such.
func TestHooksRefusals(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*Server)
		provoke   func(t *testing.T, env *testEnv)
		want      Limit
	}{
		{"queue full", func(s *Server) {
			s.MaxStartups = 1
			s.MaxQueue = 1
		}, func(t *testing.T, env *testEnv) {
			stall(t, "127.0.0.2", env.addr)
			dialFrom(t, "127.0.0.3", env.addr)
			env.waitQueued(t, 1)
			refused(t, "127.0.0.4", env.addr, "too many connections")
		}, LimitQueueFull},
		{"queue timeout", func(s *Server) {
			s.MaxStartups = 1
			s.QueueTimeout = 50 * time.Millisecond
		}, func(t *testing.T, env *testEnv) {
			stall(t, "127.0.0.2", env.addr)
			refused(t, "127.0.0.3", env.addr, "no handshake slot free")
		}, LimitQueueTimeout},
		{"connection limit", func(s *Server) {
			s.MaxConnections = 1
			s.QueueTimeout = 50 * time.Millisecond
		}, func(t *testing.T, env *testEnv) {
			echoOK(t, env.mustDial(t))
			r := run(t, env.mustDial(t), "nix-daemon --stdio", "ok")
			if !strings.Contains(r.stderr, "no connection slot free") {
				t.Fatalf("second connection: stderr %q, want it refused", r.stderr)
			}
		}, LimitConnections},
		{"session limit", func(s *Server) {
			s.MaxSessionsPerConn = 1
		}, func(t *testing.T, env *testEnv) {
			c := env.mustDial(t)
			first, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			if s, err := c.NewSession(); err == nil {
				s.Close()
				t.Fatal("second session accepted with MaxSessionsPerConn=1")
			}
		}, LimitSessions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHookEvents()
			env := startServer(t, reverseHandler, func(s *Server) {
				tt.configure(s)
				s.Hooks = h
			})
			tt.provoke(t, env)
			h.await(t, "refused "+string(tt.want))
		})
	}
}
