package rewrite

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"hash/crc32"
	"io"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/internal/fuzzseed"
	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/narstream"
)

// fuzzTextMax lets a short script with one store path be text, and keeps
// most seeds over it.
const fuzzTextMax = 128

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
		"python":    narOf(dir(ent("emacs.info-1", reg("\x1f\nFile: "+bashX+"\n")), ent("mod.py", reg("P = '"+helloX+"'\n")))),
		"zip":       narOf(reg(string(fuzzZip()))),
		"gzip":      narOf(reg(string(fuzzGzip()))),
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
		var fe *FormatError
		switch {
		case err == nil && idErr != nil:
			t.Fatalf("rewriting accepted what the identity rewrite rejects: %v", idErr)
		case errors.As(err, &le), errors.As(err, &fe):
			// A leftover or a refused format may be found before a
			// structural error further on.
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
			if b.Target != string(exactAll([]byte(a.Target), testRepls)) {
				t.Fatalf("%s: symlink target %q became %q", a.Path, a.Target, b.Target)
			}
			if a.Type == "regular" {
				checkContents(t, a.Path, []byte(a.Contents), []byte(b.Contents), fuzzTextMax)
			}
		}
	})
}

// checkContents is the content oracle: a file's bytes are a plain ReplaceAll
// of the exact or padded form, whichever rule applies to it; an archive's
// are that but for its checksums, and its members read back are the same
// ReplaceAll of the input's members.
func checkContents(t *testing.T, file string, in, out []byte, textMax int) {
	t.Helper()
	// The rules, spelled out apart from formatOf.
	zipMagic := bytes.HasPrefix(in, []byte("PK\x03\x04")) || bytes.HasPrefix(in, []byte("JM\x01\x00PK\x03\x04"))
	tarMagic := len(in) >= 512 && isTarHeader(in[:512])
	sealed := false
	for _, m := range []string{"\x1f\x8b", "\xfd7zXZ\x00", "\x28\xb5\x2f\xfd", "\x89LZO\x00", "\x04\x22\x4d\x18", "BZh", "LZIP", "070702", "\xed\xab\xee\xdb"} {
		sealed = sealed || bytes.HasPrefix(in, []byte(m))
	}
	keep := keepLengthName.MatchString(path.Base(file))
	small := len(in) <= textMax
	if !zipMagic && !tarMagic && !sealed && !keep && small && bytes.IndexByte(in, 0) < 0 {
		if want := exactAll(bytes.Clone(in), testRepls); !bytes.Equal(out, want) {
			t.Fatalf("%s: text %q became %q, want %q", file, in, out, want)
		}
		return
	}
	want := paddedAll(bytes.Clone(in), testRepls)
	container := zipMagic || tarMagic || (!sealed && small && zipEndBase(in, int64(len(in))) >= 0)
	if !container || bytes.Equal(want, in) {
		if !bytes.Equal(out, want) {
			t.Fatalf("%s: %q became %q, want %q", file, in, out, want)
		}
		return
	}
	if len(out) != len(in) {
		t.Fatalf("%s: archive size %d became %d", file, len(in), len(out))
	}
	if tarMagic {
		return // the tar test reads archives back; fuzzed ones are rarely readable
	}
	zin, err := zip.NewReader(bytes.NewReader(in), int64(len(in)))
	if err != nil {
		return
	}
	zout, err := zip.NewReader(bytes.NewReader(out), int64(len(out)))
	if err != nil {
		t.Fatalf("%s: archive/zip reads the input but not the output: %v", file, err)
	}
	if len(zin.File) != len(zout.File) {
		t.Fatalf("%s: %d members became %d", file, len(zin.File), len(zout.File))
	}
	for i, fi := range zin.File {
		a, aerr := readMember(fi)
		b, berr := readMember(zout.File[i])
		if aerr != nil {
			continue
		}
		if berr != nil {
			t.Fatalf("%s: member %s reads in the input but not in the output: %v", file, fi.Name, berr)
		}
		if fi.Method == zip.Store && (bytes.HasPrefix(a, []byte("PK\x03\x04")) || len(a) >= 512 && isTarHeader(a[:512])) {
			// An archive in the archive: its own checksums are fixed.
			checkContents(t, file+"!"+fi.Name, a, b, 0)
			continue
		}
		if w := paddedAll(bytes.Clone(a), testRepls); !bytes.Equal(b, w) && (fi.Method == zip.Store || !bytes.Equal(a, b)) {
			t.Fatalf("%s: member %s: %q became %q, want %q", file, fi.Name, a, b, w)
		}
	}
}

// keepLengthName matches the names of text files that keep their length.
var keepLengthName = regexp.MustCompile(`\.(py|pyi|pyw|elc|info|info-[0-9]+)$`)

func readMember(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 1<<20))
}

// fuzzGzip is a gzip stream that shows a cross path in a stored block.
func fuzzGzip() []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	_, _ = io.WriteString(w, glibcX)
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// fuzzZip is a small archive with a stored member that names a cross path
// and one that does not.
func fuzzZip() []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, m := range []struct{ name, data string }{{"a", glibcX}, {"b", "x"}} {
		fw, err := w.CreateRaw(&zip.FileHeader{Name: m.name, Method: zip.Store, CRC32: crc32.ChecksumIEEE([]byte(m.data)),
			CompressedSize64: uint64(len(m.data)), UncompressedSize64: uint64(len(m.data))})
		if err != nil {
			panic(err)
		}
		_, _ = io.WriteString(fw, m.data)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
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

// zipFuzzSeeds are real archives with store paths to rewrite, in the
// shapes the fixer knows; TestZipFuzzSeeds keeps testdata/fuzz in sync.
func zipFuzzSeeds(tb testing.TB) map[string][]byte {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	inner := buildZip(tb, member{name: "x", data: ld})
	return map[string][]byte{
		"stored":     buildZip(tb, member{name: "a", data: ld}, member{name: "b", data: "x"}),
		"descriptor": buildZip(tb, member{name: "a", data: ld, stream: true}),
		"deflate":    buildZip(tb, member{name: "a", data: ld, method: zip.Deflate, visible: true}),
		"zip64":      buildZip64("a", ld),
		"nested":     buildZip(tb, member{name: "in.jar", data: string(inner)}),
		"jmod":       append([]byte("JM\x01\x00"), inner...),
	}
}

func TestZipFuzzSeeds(t *testing.T) {
	fuzzseed.Check(t, "FuzzRewriteZip", zipFuzzSeeds(t), *update, "go test ./rewrite -run TestZipFuzzSeeds -update")
}

// FuzzRewriteZip feeds mutated archives to the zip fixer, in memory (the
// spooled path runs the same fixer on a file; the unit tests compare both).
// A rewrite either succeeds, with the content oracle holding, or fails
// with a FormatError or a LeftoverError: never another error, and never an
// archive that reads worse than its input.
func FuzzRewriteZip(f *testing.F) {
	r, err := New(testRepls, Options{TextMax: MaxTextMax, Forbidden: []string{other}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		err := r.RewriteNAR(&out, bytes.NewReader(narOf(dir(ent("a.jar", reg(string(data)))))))
		var le *LeftoverError
		var fe *FormatError
		switch {
		case errors.As(err, &le):
			return
		case errors.As(err, &fe):
			if fe.File != "/a.jar" || fe.Reason == "" {
				t.Fatalf("refusal without a file or a reason: %#v", fe)
			}
			return
		case err != nil:
			t.Fatalf("not a refusal: %v", err)
		}
		es := listNAR(t, out.Bytes())
		checkContents(t, "/a.jar", data, []byte(es[1].Contents), MaxTextMax)
	})
}
