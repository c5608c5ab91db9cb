package binarycache

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/internal/nartest"
)

// benchNAR is a NAR of one file of size bytes of words and numbers, which
// compresses about as well as a package's text and code.
func benchNAR(size int) []byte { return nartest.Encode(nartest.Reg(string(benchText(size)))) }

// benchText is size bytes of words and numbers.
func benchText(size int) []byte {
	words := []string{"lib", "nix", "store", "cross", "aarch64", "linux", "gnu", "glibc", "main", "return",
		"static", "const", "struct", "void", "int", "char", "if", "else", "for", "while", "\n", "\t", "(", ")", ";"}
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < size {
		if r.IntN(8) == 0 {
			b.WriteByte(byte(r.IntN(256)))
		}
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:size]
}

// BenchmarkNarFromPath measures decompressing and verifying (NarHash,
// FileHash) a 16 MiB NAR from a file:// cache, per compression: MB/s are
// of the decompressed NAR, on one goroutine (xz and bzip2 decompress on
// one core; zstd is asked for one decoder goroutine).
func BenchmarkNarFromPath(b *testing.B) {
	nar := benchNAR(16 << 20)
	sk, pk := keypair(b, "cache-1")
	for _, comp := range []string{"none", "zstd", "xz", "br", "gzip", "bzip2"} {
		b.Run(comp, func(b *testing.B) {
			dir := b.TempDir()
			e := &entry{path: helloPath, nar: nar, compression: comp, signers: []signature.SecretKey{sk}}
			if comp == "bzip2" {
				if _, err := exec.LookPath("bzip2"); err != nil {
					b.Skip("no bzip2(1) to compress with")
				}
				cmd := exec.Command("bzip2", "-9")
				cmd.Stdin = bytes.NewReader(nar)
				out, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				// writeCache only compresses helloNAR with bzip2: write
				// the entry uncompressed, then swap the file and fields.
				e.compression, e.file = "none", out
				e.narinfo = func(s string) string {
					s = dropFileFields(s)
					return strings.Replace(s, "Compression: none", "Compression: bzip2", 1)
				}
			}
			writeCache(b, dir, e)
			c, err := Open(context.Background(), "file://"+dir, Options{TrustedKeys: []signature.PublicKey{pk}})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(len(nar)))
			b.ResetTimer()
			for range b.N {
				rc, err := c.NarFromPath(b.Context(), helloPath)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
