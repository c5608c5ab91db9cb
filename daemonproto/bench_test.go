package daemonproto

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"github.com/decross-store/decross-store/pathinfo"
)

// bigNARStore serves one path whose NAR is a single file of n zero bytes,
// generated on the fly so the benchmark does not hold it in memory.
type bigNARStore struct{ n int64 }

func bigNARParts(n int64) (head, tail []byte) {
	head = (&enc{}).str("nix-archive-1", "(", "type", "regular", "contents").u64(uint64(n)).Bytes()
	tail = append(make([]byte, padLen(uint64(n))), (&enc{}).str(")").Bytes()...)
	return head, tail
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (s bigNARStore) QueryPathInfo(context.Context, string) (*pathinfo.PathInfo, error) {
	return &pathinfo.PathInfo{Path: greetingPath}, nil
}
func (s bigNARStore) QueryPathFromHashPart(context.Context, string) (string, error) { return "", nil }
func (s bigNARStore) ValidPaths(context.Context) ([]string, error)                  { return nil, nil }
func (s bigNARStore) NarFromPath(context.Context, string) (io.ReadCloser, error) {
	head, tail := bigNARParts(s.n)
	return io.NopCloser(io.MultiReader(bytes.NewReader(head), io.LimitReader(zeros{}, s.n), bytes.NewReader(tail))), nil
}

// BenchmarkNarFromPath measures NAR throughput through ServeConn over an
// in-memory connection, the client reading as fast as it can.
func BenchmarkNarFromPath(b *testing.B) {
	const size = 256 << 20
	head, tail := bigNARParts(size)
	narLen := int64(len(head)) + size + int64(len(tail))
	client, server := net.Pipe()
	srv := &Server{Store: bigNARStore{n: size}}
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), server) }()
	defer func() {
		client.Close()
		<-done
	}()

	if _, err := client.Write(hello(38).Bytes()); err != nil {
		b.Fatal(err)
	}
	// magic, version, features, nixVersion (8+16), trusted, LAST
	if _, err := io.CopyN(io.Discard, client, 8+8+8+8+16+8+8); err != nil {
		b.Fatal(err)
	}
	req := (&enc{}).u64(opNarFromPath).str(greetingPath).Bytes()
	buf := make([]byte, 1<<20)
	b.SetBytes(narLen)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := client.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, io.LimitReader(client, 8+narLen), buf); err != nil {
			b.Fatal(err)
		}
	}
}
