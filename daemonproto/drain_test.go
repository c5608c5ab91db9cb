package daemonproto

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// drainServer serves one net.Pipe connection with a Draining channel the
// test controls, and returns the client end and ServeConn's result.
func drainServer(t *testing.T, st Store) (net.Conn, chan struct{}, chan error) {
	t.Helper()
	client, server := net.Pipe()
	drain := make(chan struct{})
	srv := &Server{Store: st, Draining: func(context.Context) <-chan struct{} { return drain }}
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), server) }()
	go func() {
		if _, err := client.Write(hello(34).Bytes()); err != nil {
			t.Error(err)
		}
	}()
	// magic, version, "decross-store" string (8+16 bytes), LAST
	if _, err := io.ReadFull(client, make([]byte, 8+8+8+16+8)); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client, drain, done
}

func waitDone(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeConn = %v, want nil after draining", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still running after the drain")
	}
}

func TestDrainEndsIdleSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, drain, done := drainServer(t, fixtureStore())
		// Every goroutine of the bubble is blocked: the server waits for
		// the next opcode, which is what a drain must interrupt.
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("ServeConn ended before the drain: %v", err)
		default:
		}
		close(drain)
		waitDone(t, done)
	})
}

// blockingStore holds NarFromPath until released, to drain mid-request.
type blockingStore struct {
	*memStore
	started, release chan struct{}
}

func (b blockingStore) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	close(b.started)
	<-b.release
	return b.memStore.NarFromPath(ctx, p)
}

func TestDrainFinishesRequestInProgress(t *testing.T) {
	st := blockingStore{fixtureStore(), make(chan struct{}), make(chan struct{})}
	client, drain, done := drainServer(t, st)
	go client.Write((&enc{}).u64(opNarFromPath).str(greetingPath).Bytes())
	<-st.started
	close(drain)
	close(st.release)
	// The whole reply arrives: LAST, then the 128-byte NAR of greeting.txt.
	reply := make([]byte, 8+128)
	if _, err := io.ReadFull(client, reply); err != nil {
		t.Fatalf("reply cut short by the drain: %v", err)
	}
	if binary.LittleEndian.Uint64(reply) != stderrLast {
		t.Fatalf("reply starts with %x", reply[:8])
	}
	waitDone(t, done)
}
