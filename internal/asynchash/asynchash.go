// Package asynchash hashes a byte stream on its own goroutine, so that a
// single-threaded pipeline (read, rewrite, compress, write) does not also
// pay for SHA-256 on its critical path. Memory is a fixed set of buffers.
package asynchash

import (
	"hash"
	"sync"
)

const (
	bufSize = 256 << 10
	bufs    = 4
)

// Hasher is an io.Writer that hashes what is written, asynchronously.
// Write and Sum must not be called concurrently with each other.
type Hasher struct {
	h    hash.Hash
	full chan []byte
	free chan []byte
	done chan struct{}
	once sync.Once
	n    uint64
	sum  []byte
}

// New starts hashing with h.
func New(h hash.Hash) *Hasher {
	a := &Hasher{h: h, full: make(chan []byte, bufs), free: make(chan []byte, bufs), done: make(chan struct{})}
	for i := 0; i < bufs; i++ {
		a.free <- make([]byte, bufSize)
	}
	go func() {
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:cap(b)]
		}
	}()
	return a
}

// Write copies p into the pipeline; it never fails.
func (a *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		k := copy(b, p)
		a.full <- b[:k]
		p = p[k:]
	}
	a.n += uint64(n)
	return n, nil
}

// Size is the number of bytes written.
func (a *Hasher) Size() uint64 { return a.n }

// Sum waits for the hashing goroutine and returns the digest. Nothing may
// be written after Sum; calling it again returns the same digest.
func (a *Hasher) Sum() []byte {
	a.once.Do(func() {
		close(a.full)
		<-a.done
		a.sum = a.h.Sum(nil)
	})
	return a.sum
}

// Close ends the goroutine, for abandoned streams. It waits for the bytes
// already written to be hashed and computes the digest (Sum does both);
// it is safe to call after Sum, and Sum after it.
func (a *Hasher) Close() { a.Sum() }
