package rewrite

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/decross-store/decross-store/internal/testenv"
)

// TestRewriteKeepsLengthByName checks which small text files keep their
// length (padded) because their size or offsets are recorded, and that
// other text is still rewritten exactly.
func TestRewriteKeepsLengthByName(t *testing.T) {
	text := "#!" + bashX + "/bin/sh\nP = '" + helloX + "/share'\n"
	tests := []struct {
		name  string
		keeps bool
	}{
		{"mod.py", true},
		{"mod.pyi", true},
		{"tool.pyw", true},
		{"foo.elc", true},
		{"emacs.info", true},
		{"emacs.info-3", true},
		{"emacs.info-12", true},
		{"emacs.info-", false},
		{"emacs.info-x", false},
		{"notes.information", false},
		{"script.sh", false},
		{"foo.el", false},
		{"libfoo.la", false},
		{".packlist", false},
		{"py", false},
	}
	r := mustNew(t, testRepls, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rewriteFile(t, r, tt.name, []byte(text))
			if err != nil {
				t.Fatal(err)
			}
			want := exactAll([]byte(text), testRepls)
			if tt.keeps {
				want = paddedAll([]byte(text), testRepls)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestPycStaysValid compiles a Python module whose source names a cross
// path, rewrites the tree and imports it from a read-only copy with Python
// itself: the cache must still be used, which it is only if the source kept
// its size (the .pyc records it, with the mtime a store fixes at 1). The
// .pyc holds NULs, so it is padded too: its string constant names the
// native path.
func TestPycStaysValid(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		testenv.SkipOrFail(t, "python3 not installed")
		return
	}
	tmp := t.TempDir()
	build := filepath.Join(tmp, "build")
	if err := os.MkdirAll(build, 0o755); err != nil {
		t.Fatal(err)
	}
	src := "P = '" + helloX + "/share'\n"
	storeTime := time.Unix(1, 0)
	mod := filepath.Join(build, "mod.py")
	if err := os.WriteFile(mod, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(mod, storeTime, storeTime); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)", mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("py_compile: %v\n%s", err, out)
	}
	var in bytes.Buffer
	if err := nar.DumpPath(&in, build); err != nil {
		t.Fatal(err)
	}
	r := mustNew(t, testRepls, Options{})
	out, err := rewrite(r, in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	before, after := listNAR(t, in.Bytes()), listNAR(t, out)
	for i, e := range after {
		if e.Type != "regular" {
			continue
		}
		if want := paddedAll([]byte(before[i].Contents), testRepls); e.Contents != string(want) {
			t.Errorf("%s: got %q, want the padded %q", e.Path, e.Contents, want)
		}
	}

	store := filepath.Join(tmp, "store")
	unpack(t, out, store)
	if err := filepath.Walk(store, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, storeTime, storeTime)
	}); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(py, "-v", "-B", "-c", "import mod; print(mod.P)")
	cmd.Dir = store
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("import mod: %v\n%s", err, stderr.Bytes())
	}
	if got, want := strings.TrimSpace(string(stdout)), padded(helloX, helloN)+"/share"; got != want {
		t.Errorf("mod.P = %q, want %q", got, want)
	}
	log := stderr.String()
	if strings.Contains(log, "bytecode is stale for 'mod'") || !strings.Contains(log, "code object from '"+filepath.Join(store, "__pycache__")) {
		t.Errorf("python did not use the rewritten .pyc:\n%s", grepLines(log, "mod"))
	}
}

func grepLines(s, sub string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

type tarMember struct {
	hdr  tar.Header
	data string
}

func buildTar(t testing.TB, members ...tarMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		h.Size = int64(len(m.data))
		h.ModTime = zipModified
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readTar(t testing.TB, b []byte) []tarMember {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var ms []tarMember
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatalf("archive/tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("archive/tar: %s: %v", h.Name, err)
		}
		ms = append(ms, tarMember{hdr: *h, data: string(data)})
	}
}

func TestRewriteTar(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	// A store path cut by the end of a 100-byte name field, whose name
	// goes on into the mode field that follows it.
	intoMode := storePath("into-mode", "lib0000644")
	cut := intoMode[:len(intoMode)-len("0000644")]
	tests := []struct {
		name    string
		archive []byte
		repls   []Replacement
		wantErr string
	}{
		{
			name: "names, link targets and data",
			archive: buildTar(t,
				tarMember{hdr: tar.Header{Name: "." + helloX + "/bin/hello", Typeflag: tar.TypeReg}, data: "\x00" + ld},
				tarMember{hdr: tar.Header{Name: "ld.so", Typeflag: tar.TypeSymlink, Linkname: ld}},
				tarMember{hdr: tar.Header{Name: "plain", Typeflag: tar.TypeReg}, data: "no path"},
				tarMember{hdr: tar.Header{Name: "long/" + strings.Repeat("d", 300) + "/." + bashX, Typeflag: tar.TypeReg}, data: "#!" + bashX + "/bin/sh\n"},
				tarMember{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg}, data: strings.Repeat("\x00", 70<<10) + ld},
			),
		},
		{
			// ustar splits a long name between its prefix and name
			// fields, here inside the store path: the path is not seen
			// whole, is not rewritten, and the leftover check refuses it.
			name:    "store path split between prefix and name",
			archive: buildTar(t, tarMember{hdr: tar.Header{Name: "long/" + strings.Repeat("d", 100) + "/." + bashX, Typeflag: tar.TypeReg}}),
			wantErr: "leftover",
		},
		{
			name:    "store path running into the mode field",
			archive: buildTar(t, tarMember{hdr: tar.Header{Name: strings.Repeat("a", 100-len(cut)) + cut, Typeflag: tar.TypeReg, Mode: 0o644}, data: "x"}),
			repls:   []Replacement{{From: intoMode, To: storePath("into-mode-native", "l")}},
			wantErr: "reaches into a field other than its names",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repls := tt.repls
			if repls == nil {
				repls = testRepls
			}
			var first []byte
			for _, opts := range []Options{{TextMax: MaxTextMax}, {TextMax: -1, TempDir: t.TempDir()}} {
				r := mustNew(t, repls, opts)
				r.chunk = 7
				got, err := rewriteFile(t, r, "src.tar", tt.archive)
				if tt.wantErr == "leftover" {
					var le *LeftoverError
					if !errors.As(err, &le) {
						t.Fatalf("TextMax %d: got %v, want a LeftoverError", opts.TextMax, err)
					}
					continue
				}
				if tt.wantErr != "" {
					var fe *FormatError
					if !errors.As(err, &fe) || fe.Format != "tar" || !strings.Contains(fe.Reason, tt.wantErr) {
						t.Fatalf("TextMax %d: got %v, want a tar FormatError saying %q", opts.TextMax, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("TextMax %d: %v", opts.TextMax, err)
				}
				if first == nil {
					first = got
				} else if !bytes.Equal(got, first) {
					t.Fatal("spooled output differs from the in-memory one")
				}
			}
			if tt.wantErr != "" {
				return
			}
			in, out := readTar(t, tt.archive), readTar(t, first)
			if len(in) != len(out) {
				t.Fatalf("%d members became %d", len(in), len(out))
			}
			for i := range in {
				a, b := in[i], out[i]
				pad := func(s string) string { return string(paddedAll([]byte(s), repls)) }
				if b.hdr.Name != pad(a.hdr.Name) || b.hdr.Linkname != pad(a.hdr.Linkname) || b.data != pad(a.data) {
					t.Errorf("member %d: got %q -> %q (%d bytes), want %q -> %q", i, b.hdr.Name, b.hdr.Linkname, len(b.data), pad(a.hdr.Name), pad(a.hdr.Linkname))
				}
			}
			tarBin, err := exec.LookPath("tar")
			if err != nil {
				testenv.SkipOrFail(t, "tar not installed")
				return
			}
			f := filepath.Join(t.TempDir(), "a.tar")
			if err := os.WriteFile(f, first, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(tarBin, "-tvf", f).CombinedOutput(); err != nil {
				t.Errorf("tar -tvf: %v\n%s", err, out)
			}
		})
	}
}

// TestRewriteCompressed checks that compressed streams are opaque: a store
// path hidden by compression is left alone (Nix's reference scanner does
// not see it either), and one visible in the compressed bytes (a stored
// deflate block) makes the file refused, as rewriting it would break the
// stream's CRC.
func TestRewriteCompressed(t *testing.T) {
	script := strings.Repeat("#!"+bashX+"/bin/sh\n", 50)
	gz := func(level int) []byte {
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, level)
		_, _ = io.WriteString(w, script)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	hidden, visible := gz(gzip.BestCompression), gz(gzip.NoCompression)
	if bytes.Contains(hidden, []byte(bashX)) || !bytes.Contains(visible, []byte(bashX)) {
		t.Fatal("test archives do not hide and show the path as intended")
	}
	for _, textMax := range []int64{0, -1} {
		r := mustNew(t, testRepls, Options{TextMax: textMax})
		got, err := rewriteFile(t, r, "sh.1.gz", hidden)
		if err != nil || !bytes.Equal(got, hidden) {
			t.Errorf("TextMax %d: hidden path: got %v, or the bytes changed", textMax, err)
		}
		_, err = rewriteFile(t, r, "sh.1.gz", visible)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Format != "gzip" || fe.File != "/sh.1.gz" {
			t.Errorf("TextMax %d: visible path: got %v, want a gzip FormatError", textMax, err)
		}
	}
}

// TestRewriteSealedByMagic checks that the other formats whose checksums
// or digests cover their data are refused when a path in them changes,
// whatever their size, and passed through when none does.
func TestRewriteSealedByMagic(t *testing.T) {
	for _, tt := range []struct{ magic, format string }{
		{"\xfd7zXZ\x00", "xz"},
		{"\x28\xb5\x2f\xfd", "zstd"},
		{"BZh91AY&SY", "bzip2 or lzip"},
		{"LZIP\x01", "bzip2 or lzip"},
		{"070702", "cpio"},
		{"\xed\xab\xee\xdb", "rpm"},
	} {
		for _, textMax := range []int64{0, -1} {
			r := mustNew(t, testRepls, Options{TextMax: textMax})
			if _, err := rewriteFile(t, r, "f", []byte(tt.magic+"\x00no path")); err != nil {
				t.Errorf("%s, TextMax %d, nothing to rewrite: %v", tt.format, textMax, err)
			}
			_, err := rewriteFile(t, r, "f", []byte(tt.magic+"\x00"+glibcX))
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Format != tt.format {
				t.Errorf("%s, TextMax %d: got %v, want a FormatError", tt.format, textMax, err)
			}
		}
	}
}
