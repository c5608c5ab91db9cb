package refscan

import (
	"fmt"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// HashLen is the length of a store path's hash part in nixbase32.
const HashLen = 32

// Set is an immutable set of hash parts to look for. The zero value and
// nil are empty sets.
type Set struct {
	m map[string]string // each member maps to itself, so hits need no allocation
}

// NewSet returns the set of the given hash parts, each HashLen characters
// of nixbase32. Duplicates are allowed.
func NewSet(hashes ...string) (*Set, error) {
	s := &Set{m: make(map[string]string, len(hashes))}
	for _, h := range hashes {
		if len(h) != HashLen {
			return nil, fmt.Errorf("hash part %q: %d characters, want %d", h, len(h), HashLen)
		}
		if err := nixbase32.ValidateString(h); err != nil {
			return nil, fmt.Errorf("hash part %q: %w", h, err)
		}
		s.m[h] = h
	}
	return s, nil
}

// Len is the number of distinct hash parts in s.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.m)
}

// Has reports whether h is in s.
func (s *Set) Has(h string) bool {
	_, ok := s.lookup([]byte(h))
	return ok
}

func (s *Set) lookup(w []byte) (string, bool) {
	if s == nil {
		return "", false
	}
	h, ok := s.m[string(w)]
	return h, ok
}

// isBase32 is a constant lookup table, built once.
var isBase32 = func() (t [256]bool) {
	for i := 0; i < len(nixbase32.Alphabet); i++ {
		t[nixbase32.Alphabet[i]] = true
	}
	return t
}()

// Index returns the offset of the first window of b that is in set, or -1.
func Index(set *Set, b []byte) int {
	if set.Len() == 0 {
		return -1
	}
	i := 0
	for i+HashLen <= len(b) {
		// Like Nix, check a window from its end, so a non-base32 byte at
		// offset j skips j+1 positions at once; in binary data most
		// windows cost one load.
		j := i + HashLen - 1
		for j >= i && isBase32[b[j]] {
			j--
		}
		if j >= i {
			i = j + 1
			continue
		}
		// Unlike Nix, once a window is all base32 slide byte by byte
		// and look only at the incoming byte, so long base32 runs stay
		// linear.
		for {
			if _, ok := set.lookup(b[i : i+HashLen]); ok {
				return i
			}
			end := i + HashLen
			if end >= len(b) || !isBase32[b[end]] {
				i = end + 1
				break
			}
			i++
		}
	}
	return -1
}

// Each calls found for every window of b that is in set, in order, until
// found returns false.
// It returns false if found did.
func Each(set *Set, b []byte, found func(hash string) bool) bool {
	for {
		i := Index(set, b)
		if i < 0 {
			return true
		}
		h, _ := set.lookup(b[i : i+HashLen])
		if !found(h) {
			return false
		}
		b = b[i+1:]
	}
}

// Scanner searches one stream, written in pieces, for the hash parts of a
// set, including those split across pieces. Its memory is a fixed HashLen-1
// bytes. The zero value is not usable; create one with NewScanner.
type Scanner struct {
	set  *Set
	tail [HashLen - 1]byte // last bytes of the stream so far
	n    int
}

// NewScanner returns a Scanner for set.
func NewScanner(set *Set) *Scanner {
	return &Scanner{set: set}
}

// Reset starts a new stream.
func (s *Scanner) Reset() { s.n = 0 }

// Write scans b, the next piece of the stream, and calls found for every
// hash part of the set that ends in b, in stream order. If found returns
// false, Write stops and returns false; the scanner must then be Reset
// before further use.
func (s *Scanner) Write(b []byte, found func(hash string) bool) bool {
	if s.set.Len() == 0 {
		return true
	}
	if s.n > 0 && len(b) > 0 {
		// Windows that start in the tail end within the first
		// HashLen-1 bytes of b; windows starting in b are found below.
		var joint [2 * (HashLen - 1)]byte
		k := copy(joint[:], s.tail[:s.n])
		k += copy(joint[k:], b[:min(len(b), HashLen-1)])
		if !Each(s.set, joint[:k], found) {
			return false
		}
	}
	if !Each(s.set, b, found) {
		return false
	}
	if len(b) >= len(s.tail) {
		s.n = copy(s.tail[:], b[len(b)-len(s.tail):])
		return true
	}
	if drop := s.n + len(b) - len(s.tail); drop > 0 {
		s.n = copy(s.tail[:], s.tail[drop:s.n])
	}
	s.n += copy(s.tail[s.n:], b)
	return true
}
