package sshserver

import (
	"context"
	"encoding/binary"
	"io"
	"testing"
)

const benchChunk = 64 << 10

// quiet keeps per-connection log lines out of benchmark output.
func quiet(s *Server) { s.Logger = nil }

// BenchmarkSessionUpload measures client-to-handler throughput on one
// session, the direction NARs travel when Nix copies to the store.
func BenchmarkSessionUpload(b *testing.B) {
	env := startServer(b, func(ctx context.Context, rw io.ReadWriter) error {
		n, err := io.Copy(io.Discard, rw)
		if err != nil {
			return err
		}
		return binary.Write(rw, binary.LittleEndian, uint64(n))
	}, quiet)
	c := env.mustDial(b)
	sess, err := c.NewSession()
	if err != nil {
		b.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := stdin.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	stdin.Close()
	var n uint64
	if err := binary.Read(stdout, binary.LittleEndian, &n); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if n != uint64(b.N)*benchChunk {
		b.Fatalf("handler read %d bytes, want %d", n, uint64(b.N)*benchChunk)
	}
	if err := sess.Wait(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSessionDownload measures handler-to-client throughput, the
// direction NARs travel when Nix substitutes from the store.
func BenchmarkSessionDownload(b *testing.B) {
	env := startServer(b, func(ctx context.Context, rw io.ReadWriter) error {
		var n uint64
		if err := binary.Read(rw, binary.LittleEndian, &n); err != nil {
			return err
		}
		buf := make([]byte, benchChunk)
		for ; n > 0; n-- {
			if _, err := rw.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}, quiet)
	c := env.mustDial(b)
	sess, err := c.NewSession()
	if err != nil {
		b.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := sess.Start("nix-daemon --stdio"); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	if err := binary.Write(stdin, binary.LittleEndian, uint64(b.N)); err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, stdout)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if n != int64(b.N)*benchChunk {
		b.Fatalf("client read %d bytes, want %d", n, int64(b.N)*benchChunk)
	}
	if err := sess.Wait(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConnectAndExec measures a full connection: handshake, public-key
// auth, session, exec and exit status.
func BenchmarkConnectAndExec(b *testing.B) {
	env := startServer(b, func(ctx context.Context, rw io.ReadWriter) error { return nil }, quiet)
	b.ReportAllocs()
	for range b.N {
		c, err := env.dial()
		if err != nil {
			b.Fatal(err)
		}
		sess, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := sess.Run("nix-daemon --stdio"); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func BenchmarkParseCommand(b *testing.B) {
	const cmd = `/nix/var/nix/profiles/default/bin/nix-daemon --stdio --store '/tmp/it'\''s a store' --process-ops`
	b.ReportAllocs()
	for range b.N {
		if _, err := parseCommand(cmd); err != nil {
			b.Fatal(err)
		}
	}
}
