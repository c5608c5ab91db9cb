package narcache

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkCommit measures writing and committing small entries, the cost
// a cold request pays on top of its rewrite.
func BenchmarkCommit(b *testing.B) {
	c, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("nix-archive-1 small entry "), 160) // about 4 KiB
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		w, err := c.Create(fmt.Sprintf("/nix/store/%032d-p-1.0", i))
		if err != nil {
			b.Fatal(err)
		}
		w.Write(data)
		if _, err := w.Commit(Entry{Key: "k"}); err != nil {
			b.Fatal(err)
		}
	}
}
