package sshserver

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestForwardRequests: requests reach the session until it is over, are
// refused by the forwarder afterwards, and acknowledged follows the
// channel's request stream closing (the client's close).
func TestForwardRequests(t *testing.T) {
	in := make(chan *ssh.Request)
	stop := make(chan struct{})
	out, acknowledged := forwardRequests(in, stop)

	first := &ssh.Request{Type: "env"}
	go func() { in <- first }()
	if got := <-out; got != first {
		t.Fatalf("forwarded %v, want the request sent", got)
	}
	close(stop)
	// Nobody reads out any more: the forwarder must not block on it.
	sent := make(chan struct{})
	go func() {
		in <- &ssh.Request{Type: "signal"}
		close(sent)
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("forwarder stuck on a request after the session ended")
	}
	select {
	case <-acknowledged:
		t.Fatal("acknowledged before the channel closed")
	default:
	}
	close(in)
	select {
	case <-acknowledged:
	case <-time.After(10 * time.Second):
		t.Fatal("acknowledged not closed after the request stream closed")
	}
	if _, ok := <-out; ok {
		t.Fatal("out still open")
	}
}

// TestConnectionClosedOnceSessionsEnd: a connection whose sessions have
// all ended is closed after HandshakeTimeout, like one that never opened
// a session, so it cannot hold a MaxConnections slot for ever.
func TestConnectionClosedOnceSessionsEnd(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) { s.HandshakeTimeout = 2 * time.Second })
	c := env.mustDial(t)
	if r := run(t, c, "nix-daemon --stdio", "abc"); r.err != nil || r.stdout != "cba" {
		t.Fatalf("session: %q, %v", r.stdout, r.err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection left without sessions stayed open")
	}
}

// TestShutdownEndsSessionWaitingForExec: a session opened but not yet
// exec'd when shutdown begins is ended with a reason at once, rather than
// holding Shutdown for HandshakeTimeout.
func TestShutdownEndsSessionWaitingForExec(t *testing.T) {
	env := startServer(t, reverseHandler, func(s *Server) { s.HandshakeTimeout = time.Minute })
	c := env.mustDial(t)
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shutdown <- env.srv.Shutdown(ctx)
	}()
	stderr, err := io.ReadAll(ch.Stderr())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stderr), "server shutting down") {
		t.Errorf("stderr %q, want the reason", stderr)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown waited for a session that never exec'd")
	}
}

func newCertificate(t *testing.T, key ssh.PublicKey) *ssh.Certificate {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             key,
		CertType:        ssh.UserCert,
		KeyId:           "nix",
		ValidPrincipals: []string{"someone-else"},
		ValidAfter:      1,
		ValidBefore:     2, // expired in 1970
	}
	if err := cert.SignCert(rand.Reader, newSigner(t)); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestCertificateLineRefused: sshd honours certificates only through
// cert-authority lines, checking validity and principals; listed as a
// plain key, a certificate would skip those checks, so the file is refused.
func TestCertificateLineRefused(t *testing.T) {
	cert := newCertificate(t, newSigner(t).PublicKey())
	line := string(ssh.MarshalAuthorizedKey(cert))
	_, err := parseAuthorizedKeys(strings.NewReader("# ok\n"+line), "authorized_keys", time.UTC)
	if err == nil || !strings.Contains(err.Error(), "authorized_keys:2: ssh-ed25519-cert-v01@openssh.com certificates are not supported") {
		t.Fatalf("err = %v, want line 2 refused as a certificate", err)
	}
}

// TestCertificateAuthRefused: a certificate is no key, even if a caller
// puts one in AuthorizedKeys by hand.
func TestCertificateAuthRefused(t *testing.T) {
	clientKey := newSigner(t)
	cert := newCertificate(t, clientKey.PublicKey())
	env := startServer(t, reverseHandler, func(s *Server) { s.AuthorizedKeys = []ssh.PublicKey{cert} })
	certSigner, err := ssh.NewCertSigner(cert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.dial(ssh.PublicKeys(certSigner))
	if err == nil {
		c.Close()
		t.Fatal("expired certificate for another principal accepted")
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("dial: %v, want an authentication failure", err)
	}
}

// TestClientNetwork: handshake slots per client count IPv4 addresses one
// by one and IPv6 addresses by /64.
func TestClientNetwork(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.1:22", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:22", "192.0.2.1"},
		{"[2001:db8:1:2:aaaa::1]:22", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::7]:22", "2001:db8:1:2::"},
		{"[fe80::1%eth0]:22", "fe80::"},
	}
	for _, tt := range tests {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := clientNetwork(a).String(); got != tt.want {
			t.Errorf("clientNetwork(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
	if got := clientNetwork(&net.UnixAddr{Name: "/run/x.sock"}); got.IsValid() {
		t.Errorf("clientNetwork(unix) = %v, want the zero Addr", got)
	}
}
