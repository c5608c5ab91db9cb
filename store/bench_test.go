package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
)

// BenchmarkColdPrepare measures the cold path of a request: upstream NAR
// in, rewrite, hash both sides, write the plain cache entry. The NAR
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
		s, err := New(Config{NoReadAhead: true, Mapping: m, Upstream: f.up, Cache: c, SigningKey: &f.key, Now: time.Now})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		info, err := s.QueryPathInfo(context.Background(), nativeHello)
		if err != nil || info == nil || !strings.HasSuffix(info.Path, "hello-2.12") {
			b.Fatalf("%v %v", info, err)
		}
		b.StopTimer()
		s.Close()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkServeSmallPaths measures the warm path of a closure of many
// small paths (300 of 200 KiB): path info and the whole NAR of each, from
// cache entries left plain (just written) or compacted (zstd), as nix copy
// asks for them.
func BenchmarkServeSmallPaths(b *testing.B) {
	for _, compacted := range []bool{false, true} {
		name := "plain"
		if compacted {
			name = "zstd"
		}
		b.Run(name, func(b *testing.B) {
			const n = 300
			f := newFixture(b)
			code, err := os.ReadFile("/proc/self/exe")
			if err != nil {
				b.Fatal(err)
			}
			var entries []mapping.Entry
			for i := range n {
				cross := fmt.Sprintf("/nix/store/%032d-pkg%d-aarch64-unknown-linux-gnu-1.0", i, i)
				native := fmt.Sprintf("/nix/store/1%031d-pkg%d-1.0", i, i)
				body := string(code[i*1000%(len(code)-200<<10):][:200<<10]) + cross + "/lib\x00"
				f.up.add(cross, "", makeNAR(b, file{path: "/", contents: body, exec: true}), cross)
				entries = append(entries, mapping.Entry{Native: native, Cross: cross})
			}
			m, err := mapping.New(entries)
			if err != nil {
				b.Fatal(err)
			}
			c, err := narcache.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			s, err := New(Config{NoReadAhead: true, Mapping: m, Upstream: f.up, Cache: c, SigningKey: &f.key})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			var total int64
			for _, e := range entries {
				size, err := s.Prefetch(ctx, e.Native)
				if err != nil {
					b.Fatal(err)
				}
				total += int64(size)
				if compacted {
					v, _ := s.prepared.Load(e.Native)
					if err := c.Compact(v.(*prepared).entry); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.SetBytes(total)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, e := range entries {
					if _, err := s.QueryPathInfo(ctx, e.Native); err != nil {
						b.Fatal(err)
					}
					rc, err := s.NarFromPath(ctx, e.Native)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, rc); err != nil {
						b.Fatal(err)
					}
					rc.Close()
				}
			}
		})
	}
}
