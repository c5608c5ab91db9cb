package binarycache

import (
	"context"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/narcache"
	"github.com/decross-store/decross-store/store"
)

// BenchmarkColdRewrite measures the cold path of a server reading from a
// file:// binary cache, per compression of the upstream NAR: narinfo,
// download, decompression, NarHash check, rewrite and cache entry, for a
// 32 MiB NAR that embeds its own cross path. MB/s are of the NAR.
func BenchmarkColdRewrite(b *testing.B) {
	const (
		cross  = "/nix/store/0f7jqcwv2hb0akd1lhd8rbm1wsc0qhkm-hello-aarch64-unknown-linux-gnu-2.12"
		native = "/nix/store/1f7jqcwv2hb0akd1lhd8rbm1wsc0qhkm-hello-2.12"
	)
	// The cross path every MiB, as binaries carry their store paths.
	contents := benchText(32 << 20)
	for i := 0; i+len(cross) < len(contents); i += 1 << 20 {
		copy(contents[i:], cross)
	}
	nar := nartest.Encode(nartest.Reg(string(contents)))
	sk, pk := keypair(b, "cache-1")
	m, err := mapping.New([]mapping.Entry{{Native: native, Cross: cross}})
	if err != nil {
		b.Fatal(err)
	}
	for _, comp := range []string{"none", "zstd", "xz"} {
		b.Run(comp, func(b *testing.B) {
			dir := b.TempDir()
			writeCache(b, dir, &entry{path: cross, nar: nar, compression: comp, refs: []string{cross}, signers: []signature.SecretKey{sk}})
			up, err := Open(context.Background(), "file://"+dir, Options{TrustedKeys: []signature.PublicKey{pk}})
			if err != nil {
				b.Fatal(err)
			}
			defer up.Close()
			b.SetBytes(int64(len(nar)))
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				c, err := narcache.Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				s, err := store.New(store.Config{Mapping: m, Upstream: up, Cache: c, NoReadAhead: true})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				info, err := s.QueryPathInfo(b.Context(), native)
				if err != nil || info == nil {
					b.Fatalf("QueryPathInfo = %v, %v", info, err)
				}
				b.StopTimer()
				s.Close()
				c.Close()
				b.StartTimer()
			}
		})
	}
}
