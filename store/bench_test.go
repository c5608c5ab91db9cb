package store

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
)

// BenchmarkColdPrepare measures the cold path of a request: upstream NAR
// in, rewrite, hash, compress, write and fsync the cache entry. The NAR
// holds 128 MiB of real machine code (copies of the test binary, which
// compresses like other binaries) with store paths sprinkled in.
func BenchmarkColdPrepare(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	code, err := os.ReadFile(self)
	if err != nil {
		b.Fatal(err)
	}
	var big bytes.Buffer
	for big.Len() < 128<<20 {
		big.Write(code)
		big.WriteString(crossGlibc + "/lib/libc.so.6\x00" + crossHello + "/share\x00")
	}
	f := newFixture(b)
	f.up.add(crossHello, "", makeNAR(b, file{path: "/", contents: big.String(), exec: true}), crossHello, crossGlibc)
	m, err := mapping.New([]mapping.Entry{{Native: nativeHello, Cross: crossHello}, {Native: nativeGlibc, Cross: crossGlibc}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(big.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		c, _ := narcache.Open(dir)
		s, err := New(Config{Mapping: m, Upstream: f.up, Cache: c, SigningKey: &f.key, Now: time.Now})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		info, err := s.QueryPathInfo(context.Background(), nativeHello)
		if err != nil || info == nil || !strings.HasSuffix(info.Path, "hello-2.12") {
			b.Fatalf("%v %v", info, err)
		}
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
}
