package asynchash

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

func TestMatchesSynchronousHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*bufSize+12345)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, chunk := range []int{1, 7, 4096, bufSize - 1, bufSize, bufSize + 1, len(data)} {
		a := New(sha256.New())
		for off := 0; off < len(data); off += chunk {
			a.Write(data[off:min(off+chunk, len(data))])
		}
		want := sha256.Sum256(data)
		if got := a.Sum(); !bytes.Equal(got, want[:]) || a.Size() != uint64(len(data)) {
			t.Fatalf("chunk %d: sum %x size %d, want %x %d", chunk, got, a.Size(), want, len(data))
		}
		if got := a.Sum(); !bytes.Equal(got, want[:]) {
			t.Fatal("second Sum differs")
		}
	}
}

func TestEmpty(t *testing.T) {
	a := New(sha256.New())
	want := sha256.Sum256(nil)
	if got := a.Sum(); !bytes.Equal(got, want[:]) {
		t.Fatalf("empty sum %x", got)
	}
	a.Close()
}
