package rewrite

import "github.com/nix-community/go-nix/pkg/nixbase32"

// isBase32 is a constant lookup table, built once.
var isBase32 = func() (t [256]bool) {
	for i := 0; i < len(nixbase32.Alphabet); i++ {
		t[nixbase32.Alphabet[i]] = true
	}
	return t
}()

// findForbidden reports the first forbidden hash part in b, with Nix's
// reference scanner semantics: any 32-byte window of b that equals one.
//
// Like Nix it checks a window from its end, so a non-base32 byte at offset j
// skips j+1 positions at once; in binary data most windows cost one load.
// Unlike Nix, once a window is all base32 it slides byte by byte and only
// looks at the incoming byte, so long base32 runs stay linear.
func findForbidden(set map[string]struct{}, b []byte) (string, bool) {
	i := 0
	for i+hashLen <= len(b) {
		j := i + hashLen - 1
		for j >= i && isBase32[b[j]] {
			j--
		}
		if j >= i {
			i = j + 1
			continue
		}
		for {
			w := b[i : i+hashLen]
			if _, ok := set[string(w)]; ok {
				return string(w), true
			}
			end := i + hashLen
			if end >= len(b) || !isBase32[b[end]] {
				i = end + 1
				break
			}
			i++
		}
	}
	return "", false
}

// leftoverScanner runs findForbidden over a stream written in pieces,
// including windows that straddle two pieces.
type leftoverScanner struct {
	set  map[string]struct{}
	tail [hashLen - 1]byte // last bytes of the stream so far
	n    int
}

func (s *leftoverScanner) reset() { s.n = 0 }

func (s *leftoverScanner) write(b []byte) (string, bool) {
	if s.n > 0 && len(b) > 0 {
		// Windows that start in the tail end within the first
		// hashLen-1 bytes of b; windows starting in b are found below.
		var joint [2 * (hashLen - 1)]byte
		k := copy(joint[:], s.tail[:s.n])
		k += copy(joint[k:], b[:min(len(b), hashLen-1)])
		if h, ok := findForbidden(s.set, joint[:k]); ok {
			return h, true
		}
	}
	if h, ok := findForbidden(s.set, b); ok {
		return h, true
	}
	if len(b) >= len(s.tail) {
		s.n = copy(s.tail[:], b[len(b)-len(s.tail):])
		return "", false
	}
	if drop := s.n + len(b) - len(s.tail); drop > 0 {
		s.n = copy(s.tail[:], s.tail[drop:s.n])
	}
	s.n += copy(s.tail[s.n:], b)
	return "", false
}
