package refscan

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/internal/fuzzseed"
)

var update = flag.Bool("update", false, "rewrite files under testdata/")

const (
	h1 = "0c8v6bw9zkf7mpn6fr6jvxqg8j3v9x2b"
	h2 = "1bmxp2d3m8hvh6kfs1yydhqkfvr4xxjl"
)

func mustSet(t testing.TB, hashes ...string) *Set {
	t.Helper()
	s, err := NewSet(hashes...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSet(t *testing.T) {
	for _, bad := range []string{"", h1[:31], h1 + "0", h1[:31] + "e", strings.ToUpper(h1)} {
		if _, err := NewSet(h1, bad); err == nil {
			t.Errorf("NewSet accepted %q", bad)
		}
	}
	s := mustSet(t, h1, h1, h2)
	if s.Len() != 2 || !s.Has(h1) || !s.Has(h2) || s.Has(h1[1:]+"0") {
		t.Errorf("set of %d: has h1 %v, h2 %v", s.Len(), s.Has(h1), s.Has(h2))
	}
	var empty *Set
	if empty.Len() != 0 || empty.Has(h1) {
		t.Error("nil set is not empty")
	}
}

// naive is the definition: every window of b in set, in order.
func naive(set *Set, b []byte) []string {
	var hits []string
	for i := 0; i+HashLen <= len(b); i++ {
		if set.Has(string(b[i : i+HashLen])) {
			hits = append(hits, string(b[i:i+HashLen]))
		}
	}
	return hits
}

func all(set *Set, b []byte) []string {
	var hits []string
	Each(set, b, func(h string) bool { hits = append(hits, h); return true })
	return hits
}

func TestIndex(t *testing.T) {
	set := mustSet(t, h1)
	tests := []struct {
		in   string
		want int
	}{
		{"", -1},
		{h1, 0},
		{h1[:31], -1},
		{"/nix/store/" + h1 + "-zlib", 11},
		{strings.Repeat("a", 100) + h1, 100},
		// A run of 33 base32 bytes before the hash: a scanner that
		// restarts after every 32 bytes would miss it.
		{strings.Repeat("a", 33) + h1 + strings.Repeat("b", 5), 33},
		{strings.Repeat("a", 200), -1},
		{h1[:16] + "e" + h1[16:], -1}, // 'e' is not in the nixbase32 alphabet
		{"\x00\xff" + h1 + h1, 2},
	}
	for _, tt := range tests {
		if got := Index(set, []byte(tt.in)); got != tt.want {
			t.Errorf("Index(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
	if got := Index(nil, []byte(h1)); got != -1 {
		t.Errorf("Index with an empty set = %d, want -1", got)
	}
}

func TestEach(t *testing.T) {
	set := mustSet(t, h1, h2)
	tests := []struct {
		in   string
		want []string
	}{
		{"nothing here", nil},
		{h1 + h2, []string{h1, h2}},
		{"x" + h2 + "/" + h1 + "-" + h2, []string{h2, h1, h2}},
		// Overlapping windows: h1 followed by its own last 31 bytes and
		// one more character forms no second hit unless it spells one.
		{h1 + h1[1:] + h1[:1], naive(set, []byte(h1+h1[1:]+h1[:1]))},
	}
	for _, tt := range tests {
		if got := all(set, []byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Each(%q) found %q, want %q", tt.in, got, tt.want)
		}
	}
	// Stopping early.
	n := 0
	if Each(set, []byte(h1+h2), func(string) bool { n++; return false }) || n != 1 {
		t.Errorf("Each did not stop after the first hit (%d calls)", n)
	}
}

// TestScannerSplits moves hash parts across every pair of split points.
func TestScannerSplits(t *testing.T) {
	set := mustSet(t, h1, h2)
	for _, s := range []string{h1, "--" + h1 + "--", "zz" + h1 + "zz", "\x00" + h1, h1 + h2, "a" + h2 + "." + h1} {
		want := naive(set, []byte(s))
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				sc := NewScanner(set)
				var got []string
				for _, part := range []string{s[:i], s[i:j], s[j:]} {
					sc.Write([]byte(part), func(h string) bool { got = append(got, h); return true })
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%q split at %d,%d: found %q, want %q", s, i, j, got, want)
				}
			}
		}
	}
	// 31 bytes of the hash are not a hit, however they are split.
	s := "x" + h1[:31] + "x" + h1[1:]
	for i := 0; i <= len(s); i++ {
		sc := NewScanner(set)
		hit := func(string) bool { t.Fatalf("split at %d: false positive", i); return false }
		sc.Write([]byte(s[:i]), hit)
		sc.Write([]byte(s[i:]), hit)
	}
}

func TestScannerReset(t *testing.T) {
	set := mustSet(t, h1)
	sc := NewScanner(set)
	sc.Write([]byte(h1[:20]), func(string) bool { t.Fatal("hit in a prefix"); return false })
	sc.Reset()
	// The prefix of the previous stream must not join the next one.
	sc.Write([]byte(h1[20:]), func(string) bool { t.Fatal("hit across Reset"); return false })
	if sc.Write([]byte(h1), func(string) bool { return false }) {
		t.Error("Write did not report the stop")
	}
}

// seeds are the FuzzScanner seed inputs; TestFuzzSeeds keeps
// testdata/fuzz in sync.
func seeds() map[string][]byte {
	return map[string][]byte{
		"split":    []byte("\x07/nix/store/" + h1 + "-bash"),
		"two":      []byte("\x20" + h2 + h1),
		"binary":   []byte("\x03\x00\xff\x7fELF" + h2[:31]),
		"base32":   []byte("\x1f" + strings.Repeat("0", 40) + h1),
		"overlaps": []byte("\x01" + h1 + h1[1:] + h1[:1]),
	}
}

// TestFuzzSeeds checks the committed seed corpus; regenerate it with
// go test ./refscan -run TestFuzzSeeds -update.
func TestFuzzSeeds(t *testing.T) {
	fuzzseed.Check(t, "FuzzScanner", seeds(), *update, "go test ./refscan -run TestFuzzSeeds -update")
}

// FuzzScanner holds Each and Scanner to the naive definition. The first
// byte of the input sets the piece size for the Scanner.
func FuzzScanner(f *testing.F) {
	set := mustSet(f, h1, h2)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		piece := int(data[0])%40 + 1
		b := data[1:]
		want := naive(set, b)
		if got := all(set, b); !reflect.DeepEqual(got, want) {
			t.Fatalf("Each found %q, want %q", got, want)
		}
		sc := NewScanner(set)
		var got []string
		for len(b) > 0 {
			n := min(piece, len(b))
			sc.Write(b[:n], func(h string) bool { got = append(got, h); return true })
			b = b[n:]
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Scanner in pieces of %d found %q, want %q", piece, got, want)
		}
	})
}

// BenchmarkIndex measures the scan on random bytes, the common case of
// binaries with no hit.
func BenchmarkIndex(b *testing.B) {
	data := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(data)
	set := mustSet(b, h1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if Index(set, data) >= 0 {
			b.Fatal("unexpected hit")
		}
	}
}

// BenchmarkScannerText measures text dense in store paths, in 64 KiB
// pieces.
func BenchmarkScannerText(b *testing.B) {
	data := bytes.Repeat([]byte("exec /nix/store/"+h2+"-glibc-2.36/lib/ld.so --library-path /nix/store/"+h1+"-x\n"), 1<<20/100)
	set := mustSet(b, h1)
	sc := NewScanner(set)
	hits := 0
	count := func(string) bool { hits++; return true }
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sc.Reset()
		for p := data; len(p) > 0; {
			n := min(len(p), 64<<10)
			sc.Write(p[:n], count)
			p = p[n:]
		}
	}
	if hits == 0 {
		b.Fatal("no hits")
	}
}
