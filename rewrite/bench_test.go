package rewrite

import (
	"archive/zip"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"
)

// benchNAR builds a NAR of about size bytes: a few large binary files of
// pseudo-random bytes with a cross path every few KiB, plus small scripts.
func benchNAR(tb testing.TB, size int) []byte {
	tb.Helper()
	rng := rand.NewChaCha8([32]byte{1})
	pick := rand.New(rng)
	var buf bytes.Buffer
	buf.Grow(size + 1<<20)
	nw, err := nar.NewWriter(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}))
	must(nw.WriteHeader(&nar.Header{Path: "/bin", Type: nar.TypeDirectory}))
	for i := range 500 {
		script := fmt.Sprintf("#!%s/bin/sh\nexec %s/bin/hello --n %d \"$@\"\n", bashX, helloX, i)
		must(nw.WriteHeader(&nar.Header{Path: fmt.Sprintf("/bin/s%03d", i), Type: nar.TypeRegular, Size: int64(len(script)), Executable: true}))
		_, err := io.WriteString(nw, script)
		must(err)
	}
	must(nw.WriteHeader(&nar.Header{Path: "/lib", Type: nar.TypeDirectory}))
	const files = 4
	fileSize := (size - buf.Len()) / files
	block := make([]byte, 4096)
	for i := range files {
		must(nw.WriteHeader(&nar.Header{Path: fmt.Sprintf("/lib/lib%d.so", i), Type: nar.TypeRegular, Size: int64(fileSize)}))
		for left := fileSize; left > 0; {
			_, _ = rng.Read(block)
			copy(block[pick.IntN(len(block)-len(glibcX)):], glibcX+"/lib")
			n := min(left, len(block))
			_, err := nw.Write(block[:n])
			must(err)
			left -= n
		}
	}
	must(nw.Close())
	return buf.Bytes()
}

func BenchmarkRewriteNAR(b *testing.B) {
	in := benchNAR(b, 256<<20)
	r := mustNew(b, testRepls, Options{Forbidden: []string{other}})
	src := bytes.NewReader(in)
	// Warm the state pool so the loop measures the steady state.
	if err := r.RewriteNAR(io.Discard, src); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		src.Reset(in)
		if err := r.RewriteNAR(io.Discard, src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplacePadded measures the replacement scan alone.
func BenchmarkReplacePadded(b *testing.B) {
	data := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(data)
	r := mustNew(b, testRepls, Options{})
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_, _ = r.replacePadded(data, true)
	}
}

// benchJar builds a NAR holding one jar of about size bytes: 16 stored
// members of pseudo-random bytes with a cross path every few KiB, so every
// member's CRC-32 must be recomputed.
func benchJar(tb testing.TB, size int) []byte {
	tb.Helper()
	rng := rand.NewChaCha8([32]byte{2})
	pick := rand.New(rng)
	var zbuf bytes.Buffer
	zbuf.Grow(size + 1<<20)
	zw := zip.NewWriter(&zbuf)
	const members = 16
	data := make([]byte, size/members)
	for i := range members {
		_, _ = rng.Read(data)
		for off := 0; off+len(glibcX) < len(data); off += 4096 {
			copy(data[off+pick.IntN(4096-len(glibcX)):], glibcX)
		}
		fw, err := zw.CreateRaw(&zip.FileHeader{Name: fmt.Sprintf("lib/%02d.so", i), Method: zip.Store,
			CRC32: crc32.ChecksumIEEE(data), CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := fw.Write(data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return narOf(dir(ent("share", dir(ent("big.jar", reg(zbuf.String()))))))
}

// BenchmarkRewriteNARZip measures the spooled path: a jar is written to a
// temporary file twice, its members compared and their CRCs recomputed,
// then read back.
func BenchmarkRewriteNARZip(b *testing.B) {
	in := benchJar(b, 64<<20)
	r := mustNew(b, testRepls, Options{Forbidden: []string{other}, TempDir: b.TempDir()})
	src := bytes.NewReader(in)
	if err := r.RewriteNAR(io.Discard, src); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		src.Reset(in)
		if err := r.RewriteNAR(io.Discard, src); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSpooledMemoryBounded checks that what a spooled archive allocates
// does not grow with its size.
func TestSpooledMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds large archives")
	}
	r := mustNew(t, testRepls, Options{TempDir: t.TempDir()})
	alloc := func(in []byte) uint64 {
		// Once first, so the state pool holds its buffers.
		if err := r.RewriteNAR(io.Discard, bytes.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := r.RewriteNAR(io.Discard, bytes.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(benchJar(t, 4<<20)), alloc(benchJar(t, 32<<20))
	t.Logf("allocated %d bytes for a 4 MiB jar, %d for a 32 MiB one", small, large)
	if large > small+64<<10 || large > 512<<10 {
		t.Errorf("a 32 MiB jar allocates %d bytes, a 4 MiB one %d: memory grows with the archive", large, small)
	}
}
