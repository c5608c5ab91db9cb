package rewrite

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/internal/fuzzseed"
	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/narstream"
)

const fuzzTextMax = 40

// fuzzSeeds are the seed NARs; TestFuzzSeeds keeps testdata/fuzz in sync.
func fuzzSeeds() map[string][]byte {
	return map[string][]byte{
		"binary":    narOf(exe("\x7fELF\x00" + glibcX + "/lib/ld.so\x00" + helloX)),
		"text":      narOf(exe("#!" + bashX + "/bin/sh\n")),
		"symlink":   narOf(sym(glibcX + "/lib")),
		"leftover":  narOf(reg("\x00/nix/store/" + hashOf(glibcX) + "-glibc-2.35")),
		"dotdot":    narOf(dir(ent("..", reg("x")))),
		"paren":     narOf(dir(ent("d", dir(ent(")", exe("#!"+bashX+"/bin/sh\n")), ent("z", reg("x")))))),
		"unsorted":  narOf(dir(ent("b", reg("")), ent("a", reg("")))),
		"truncated": narOf(dir(ent("a", reg("abc"))))[:100],
		"tree": narOf(dir(
			ent("..data", reg("")),
			ent("bin", dir(ent("hello", exe(strings.Repeat("\x00"+glibcX, 3))), ent("sh", sym(bashX+"/bin/sh")))),
			ent("empty", dir()),
			ent("lib", dir(ent("libfoo.so", reg(libfooX+"/lib\x00")))),
		)),
	}
}

// TestFuzzSeeds checks the committed seed corpus; regenerate it with
// go test ./rewrite -run TestFuzzSeeds -update.
func TestFuzzSeeds(t *testing.T) {
	fuzzseed.Check(t, "FuzzRewriteNAR", fuzzSeeds(), *update, "go test ./rewrite -run TestFuzzSeeds -update")
}

func FuzzRewriteNAR(f *testing.F) {
	r, err := New(testRepls, Options{TextMax: fuzzTextMax, Forbidden: []string{other}})
	if err != nil {
		f.Fatal(err)
	}
	r.chunk = 16 // many buffer boundaries even in small inputs
	identity, err := New(nil, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		var out bytes.Buffer
		err := r.RewriteNAR(&out, src)

		var idOut bytes.Buffer
		idSrc := bytes.NewReader(data)
		idErr := identity.RewriteNAR(&idOut, idSrc)
		var le *LeftoverError
		switch {
		case err == nil && idErr != nil:
			t.Fatalf("rewriting accepted what the identity rewrite rejects: %v", idErr)
		case errors.As(err, &le):
			// A leftover may be found before a structural error further on.
		case err != nil && idErr == nil:
			t.Fatalf("rewriting rejected what the identity rewrite accepts: %v", err)
		}
		if idErr != nil {
			return
		}
		consumed := data[:len(data)-idSrc.Len()]
		if !bytes.Equal(idOut.Bytes(), consumed) {
			t.Fatalf("identity rewrite changed the NAR\n in: %q\nout: %q", consumed, idOut.Bytes())
		}
		if len(data)-src.Len() != len(consumed) && err == nil {
			t.Fatalf("rewrite consumed %d bytes, identity %d", len(data)-src.Len(), len(consumed))
		}
		if err != nil {
			return
		}

		if goNixMisreads(consumed) {
			return
		}
		in, perr := nartest.Parse(consumed)
		if perr != nil {
			t.Fatalf("go-nix rejects an input the rewriter accepted: %v", perr)
		}
		got, perr := nartest.Parse(out.Bytes())
		if perr != nil {
			t.Fatalf("output is not a valid NAR: %v", perr)
		}
		if len(in) != len(got) {
			t.Fatalf("%d entries in, %d out", len(in), len(got))
		}
		for i := range in {
			a, b := in[i], got[i]
			if a.Path != b.Path || a.Type != b.Type || a.Executable != b.Executable {
				t.Fatalf("entry %d: %+v became %+v", i, a, b)
			}
			binary := len(a.Contents) > fuzzTextMax || strings.IndexByte(a.Contents, 0) >= 0
			if a.Type == "regular" && binary && len(a.Contents) != len(b.Contents) {
				t.Fatalf("%s: binary file size %d became %d", a.Path, len(a.Contents), len(b.Contents))
			}
			if len(b.Contents) > len(a.Contents) || len(b.Target) > len(a.Target) {
				t.Fatalf("%s grew", a.Path)
			}
		}
	})
}

// goNixMisreads reports whether nar has an entry named ")", which go-nix's
// reader (the oracle above) takes for the end of its directory; Nix, and
// the reader the rewriter uses, read it as a name.
func goNixMisreads(nar []byte) bool {
	r := narstream.NewReader(bytes.NewReader(nar))
	for {
		h, err := r.Next()
		if err != nil {
			return false
		}
		if strings.HasSuffix(h.Path, "/)") {
			return true
		}
	}
}
