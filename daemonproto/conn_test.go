package daemonproto

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// brokenNARStore fails half-way through every NAR.
type brokenNARStore struct{ *memStore }

var errDiskGone = errors.New("disk gone")

func (s brokenNARStore) NarFromPath(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader("\x0d\x00\x00\x00\x00\x00\x00\x00nix-"),
		errReader{errDiskGone})), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestNarFailureMidStream(t *testing.T) {
	in := hello(34).u64(opNarFromPath).str(greetingPath).u64(opIsValidPath).str(greetingPath)
	out, err := serve(brokenNARStore{fixtureStore()}, in.Bytes())
	if !errors.Is(err, errDiskGone) {
		t.Fatalf("ServeConn = %v, want the NAR read error", err)
	}
	d := &dec{t: t, b: out}
	d.handshake(34)
	// At most LAST and the partial NAR went out, and nothing for the
	// IsValidPath already sent: the client sees the connection end.
	sent := (&enc{}).u64(stderrLast).String() + "\x0d\x00\x00\x00\x00\x00\x00\x00nix-"
	if !strings.HasPrefix(sent, string(d.b)) {
		t.Errorf("after the handshake: %q", d.b)
	}
}

func TestServeConnCancel(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	srv := &Server{Store: fixtureStore()}
	go func() { done <- srv.ServeConn(ctx, server) }()
	if _, err := client.Write(hello(34).Bytes()); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, client) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeConn = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn ignored the cancelled context")
	}
}
