package rewrite

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
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
