package rewrite

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/narstream"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

var (
	glibcX  = storePath("glibc-cross", "glibc-aarch64-unknown-linux-gnu-2.36")
	glibcN  = storePath("glibc-native", "glibc-2.36")
	helloX  = storePath("hello-cross", "hello-aarch64-unknown-linux-gnu-2.12")
	helloN  = storePath("hello-native", "hello-2.12")
	bashX   = storePath("bash-cross", "bash-aarch64-unknown-linux-gnu-5.2")
	bashN   = storePath("bash-native", "bash-5.2")
	libfooX = storePath("libfoo-cross", "libfoo-1.0")
	libfooN = storePath("libfoo-native", "libfoo-1.0")
	// other is a cross path outside the replacement set, forbidden by the
	// caller because it is not available natively.
	other = storePath("other-cross", "zlib-aarch64-unknown-linux-gnu-1.3")

	testRepls = []Replacement{
		{From: glibcX, To: glibcN},
		{From: helloX, To: helloN},
		{From: bashX, To: bashN},
		{From: libfooX, To: libfooN},
	}
)

func hashOf(p string) string { return p[len("/nix/store/") : len("/nix/store/")+32] }

func TestRewriteNAR(t *testing.T) {
	shebang := "#!" + bashX + "/bin/sh\necho hi\n"
	longText := "#!" + bashX + "/bin/sh\n" + strings.Repeat("echo padding\n", 8)
	tests := []struct {
		name    string
		textMax int64
		in      node
		want    node
	}{
		{
			name: "equal length",
			in:   reg("\x00" + libfooX + "/lib/libfoo.so\x00"),
			want: reg("\x00" + libfooN + "/lib/libfoo.so\x00"),
		},
		{
			name: "shorter is padded after /nix/store/",
			in:   reg("\x7fELF\x00" + glibcX + "/lib/ld-linux-aarch64.so.1\x00tail"),
			want: reg("\x7fELF\x00" + "/nix/store/" + strings.Repeat("/", 26) + hashOf(glibcN) + "-glibc-2.36/lib/ld-linux-aarch64.so.1\x00tail"),
		},
		{
			name: "multiple occurrences",
			in:   reg("a" + glibcX + "/lib\x00b" + bashX + "\x00c" + glibcX + ":" + libfooX),
			want: reg("a" + padded(glibcX, glibcN) + "/lib\x00b" + padded(bashX, bashN) + "\x00c" + padded(glibcX, glibcN) + ":" + libfooN),
		},
		{
			name: "back to back",
			in:   reg("\x00" + glibcX + glibcX + helloX + bashX),
			want: reg("\x00" + padded(glibcX, glibcN) + padded(glibcX, glibcN) + padded(helloX, helloN) + padded(bashX, bashN)),
		},
		{
			name: "followed by any byte",
			in:   reg("\x00" + glibcX + "-extra " + glibcX + "\xff" + glibcX),
			want: reg("\x00" + padded(glibcX, glibcN) + "-extra " + padded(glibcX, glibcN) + "\xff" + padded(glibcX, glibcN)),
		},
		{
			name: "store prefix without a known path is kept",
			in:   reg("\x00/nix/store/ /nix/store/" + hashOf(other) + "x /nix/store/abc"),
			want: reg("\x00/nix/store/ /nix/store/" + hashOf(other) + "x /nix/store/abc"),
		},
		{
			name: "self reference",
			in:   exe("\x00" + helloX + "/share/locale\x00" + helloX + "/bin/hello"),
			want: exe("\x00" + padded(helloX, helloN) + "/share/locale\x00" + padded(helloX, helloN) + "/bin/hello"),
		},
		{
			name: "text is rewritten exactly and shrinks",
			in:   exe(shebang),
			want: exe("#!" + bashN + "/bin/sh\necho hi\n"),
		},
		{
			name:    "text of exactly TextMax bytes is exact",
			textMax: int64(len(shebang)),
			in:      reg(shebang),
			want:    reg("#!" + bashN + "/bin/sh\necho hi\n"),
		},
		{
			name: "small file with one NUL is padded",
			in:   reg(shebang + "\x00"),
			want: reg("#!" + padded(bashX, bashN) + "/bin/sh\necho hi\n\x00"),
		},
		{
			name:    "text larger than TextMax is padded",
			textMax: 64,
			in:      reg(longText),
			want:    reg(strings.Replace(longText, bashX, padded(bashX, bashN), 1)),
		},
		{
			name:    "negative TextMax pads everything",
			textMax: -1,
			in:      exe(shebang),
			want:    exe("#!" + padded(bashX, bashN) + "/bin/sh\necho hi\n"),
		},
		{
			name: "symlink target is exact",
			in:   sym(glibcX + "/lib/ld-linux-aarch64.so.1"),
			want: sym(glibcN + "/lib/ld-linux-aarch64.so.1"),
		},
		{
			name: "empty file",
			in:   reg(""),
			want: reg(""),
		},
		{
			name: "entry names starting with two dots are valid",
			in:   dir(ent("...", reg("")), ent("..data", dir(ent("..x", sym(glibcX)))), ent("a", reg(""))),
			want: dir(ent("...", reg("")), ent("..data", dir(ent("..x", sym(glibcN)))), ent("a", reg(""))),
		},
		{
			name: "empty directory",
			in:   dir(),
			want: dir(),
		},
		{
			name: "nested directories keep structure, order and modes",
			in: dir(
				ent("bin", dir(
					ent("hello", exe("\x00"+glibcX+"/lib/ld-linux-aarch64.so.1\x00"+helloX)),
					ent("hello-wrapper", exe("#!"+bashX+"/bin/sh\nexec "+helloX+"/bin/hello\n")),
				)),
				ent("lib", dir(
					ent("empty", dir()),
					ent("ld.so", sym(glibcX+"/lib/ld-linux-aarch64.so.1")),
					ent("libfoo.so", reg("\x00"+libfooX)),
				)),
				ent("share", sym("lib")),
			),
			want: dir(
				ent("bin", dir(
					ent("hello", exe("\x00"+padded(glibcX, glibcN)+"/lib/ld-linux-aarch64.so.1\x00"+padded(helloX, helloN))),
					ent("hello-wrapper", exe("#!"+bashN+"/bin/sh\nexec "+helloN+"/bin/hello\n")),
				)),
				ent("lib", dir(
					ent("empty", dir()),
					ent("ld.so", sym(glibcN+"/lib/ld-linux-aarch64.so.1")),
					ent("libfoo.so", reg("\x00"+libfooN)),
				)),
				ent("share", sym("lib")),
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, testRepls, Options{TextMax: tt.textMax})
			got, err := rewrite(r, narOf(tt.in))
			if err != nil {
				t.Fatalf("RewriteNAR: %v", err)
			}
			want := narOf(tt.want)
			if !bytes.Equal(got, want) {
				t.Errorf("output mismatch\n got: %q\nwant: %q", got, want)
			}
			listNAR(t, got)
		})
	}
}

func TestRewriteNARLeftover(t *testing.T) {
	mismatch := "/nix/store/" + hashOf(glibcX) + "-glibc-2.35"
	tests := []struct {
		name      string
		in        node
		forbidden []string
		wantFile  string
		wantHash  string
	}{
		{
			name:     "hash matches but name differs",
			in:       reg("\x00" + mismatch + "/lib/libc.so.6"),
			wantFile: "",
			wantHash: hashOf(glibcX),
		},
		{
			name:     "name mismatch in text file",
			in:       dir(ent("bin", dir(ent("sh", exe("#!"+mismatch+"/bin/sh\n"))))),
			wantFile: "/bin/sh",
			wantHash: hashOf(glibcX),
		},
		{
			name:     "name mismatch in large binary",
			in:       dir(ent("bin", dir(ent("hello", exe(strings.Repeat("\x00", 300<<10)+mismatch))))),
			wantFile: "/bin/hello",
			wantHash: hashOf(glibcX),
		},
		{
			name:     "bare hash in content",
			in:       dir(ent("a", reg("x")), ent("b", reg("\x00build-id "+hashOf(bashX)+"\n"))),
			wantFile: "/b",
			wantHash: hashOf(bashX),
		},
		{
			name:     "entry name",
			in:       dir(ent("lib", dir(ent(hashOf(helloX)+"-dangling", reg(""))))),
			wantFile: "/lib/" + hashOf(helloX) + "-dangling",
			wantHash: hashOf(helloX),
		},
		{
			name:      "symlink target",
			in:        dir(ent("lib", dir(ent("libz.so", sym(other+"/lib/libz.so"))))),
			forbidden: []string{other},
			wantFile:  "/lib/libz.so",
			wantHash:  hashOf(other),
		},
		{
			name:      "extra forbidden bare hash part",
			in:        dir(ent("etc", dir(ent("conf", reg("zlib="+other+"\n"))))),
			forbidden: []string{hashOf(other)},
			wantFile:  "/etc/conf",
			wantHash:  hashOf(other),
		},
		{
			// A relative target is not a whole store path, so it is not
			// rewritten, and its hash must not slip through.
			name:     "relative symlink into a cross path",
			in:       dir(ent("share", sym("../"+strings.TrimPrefix(helloX, "/nix/store/")+"/share"))),
			wantFile: "/share",
			wantHash: hashOf(helloX),
		},
		{
			name:     "hash inside a longer base32 run",
			in:       reg("\x00zzzz" + hashOf(libfooX) + "zzzz"),
			wantFile: "",
			wantHash: hashOf(libfooX),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, testRepls, Options{Forbidden: tt.forbidden})
			_, err := rewrite(r, narOf(tt.in))
			var le *LeftoverError
			if !errors.As(err, &le) {
				t.Fatalf("RewriteNAR error = %v, want *LeftoverError", err)
			}
			if le.File != tt.wantFile || le.HashPart != tt.wantHash {
				t.Errorf("LeftoverError{File: %q, HashPart: %q}, want {%q, %q}", le.File, le.HashPart, tt.wantFile, tt.wantHash)
			}
			if !strings.Contains(le.Error(), tt.wantHash) {
				t.Errorf("message %q does not name the hash", le.Error())
			}
		})
	}
}

// TestRewriteNARSplitEverywhere moves one occurrence across every offset
// relative to the read-buffer boundaries, with tiny buffers and sources
// that return short reads.
func TestRewriteNARSplitEverywhere(t *testing.T) {
	sources := map[string]func(io.Reader) io.Reader{
		"full":     func(r io.Reader) io.Reader { return r },
		"one-byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, chunk := range []int{1, 2, 7, 64} {
		r := mustNew(t, testRepls, Options{TextMax: -1})
		r.chunk = chunk
		span := 2*(chunk+r.carry()) + 2
		for k := 0; k <= span; k++ {
			for srcName, wrap := range sources {
				head := strings.Repeat("x", k)
				tail := "/lib/ld.so" + strings.Repeat("y", chunk)
				in := narOf(reg(head + glibcX + tail))
				want := narOf(reg(head + padded(glibcX, glibcN) + tail))
				var out bytes.Buffer
				if err := r.RewriteNAR(&out, wrap(bytes.NewReader(in))); err != nil {
					t.Fatalf("chunk %d offset %d %s: %v", chunk, k, srcName, err)
				}
				if !bytes.Equal(out.Bytes(), want) {
					t.Fatalf("chunk %d offset %d %s: output mismatch\n got: %q\nwant: %q", chunk, k, srcName, out.Bytes(), want)
				}

				// The same split for the leftover scan: a bare hash.
				in = narOf(reg(head + hashOf(other) + tail))
				rf := mustNew(t, nil, Options{TextMax: -1, Forbidden: []string{other}})
				rf.chunk = chunk
				err := rf.RewriteNAR(io.Discard, wrap(bytes.NewReader(in)))
				var le *LeftoverError
				if !errors.As(err, &le) || le.HashPart != hashOf(other) {
					t.Fatalf("chunk %d offset %d %s: leftover scan: got %v", chunk, k, srcName, err)
				}
			}
		}
	}
}

func TestNewValidation(t *testing.T) {
	longer := storePath("glibc-native-long", "glibc-aarch64-unknown-linux-gnu-2.36-extra")
	tests := []struct {
		name    string
		repls   []Replacement
		opts    Options
		wantSub []string
	}{
		{"to longer than from", []Replacement{{glibcX, longer}}, Options{}, []string{glibcX, longer, "longer"}},
		{"from not a store path", []Replacement{{"/usr/lib/libc.so", glibcN}}, Options{}, []string{"/usr/lib/libc.so", "cross"}},
		{"to not a store path", []Replacement{{glibcX, "/nix/store/short"}}, Options{}, []string{"/nix/store/short", "native"}},
		{"from with subpath", []Replacement{{glibcX + "/lib", glibcN}}, Options{}, []string{glibcX + "/lib"}},
		{"to with subpath", []Replacement{{glibcX, glibcN + "/l"}}, Options{}, []string{glibcN + "/l"}},
		{"bad hash alphabet", []Replacement{{"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x-1.0", glibcN}}, Options{}, []string{"eeee"}},
		{"duplicate from hash", []Replacement{{glibcX, glibcN}, {"/nix/store/" + hashOf(glibcX) + "-glibc-other-2.36", helloN}}, Options{}, []string{"already used"}},
		{"to equals from", []Replacement{{glibcX, glibcX}}, Options{}, []string{"forbidden"}},
		{"to hash is another from", []Replacement{{glibcX, glibcN}, {helloX, "/nix/store/" + hashOf(glibcX) + "-hello"}}, Options{}, []string{"forbidden"}},
		{"to hash forbidden by caller", []Replacement{{glibcX, glibcN}}, Options{Forbidden: []string{glibcN}}, []string{"forbidden", glibcN}},
		{"bad forbidden entry", nil, Options{Forbidden: []string{"not-a-hash"}}, []string{"not-a-hash"}},
		{"text max too large", nil, Options{TextMax: MaxTextMax + 1}, []string{"text max"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.repls, tt.opts)
			if err == nil {
				t.Fatal("New succeeded, want error")
			}
			for _, s := range tt.wantSub {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestRewriteNARRejectsInvalid(t *testing.T) {
	tests := append(nartest.InvalidNARs(), nartest.Invalid{Name: "nested too deep", NAR: narOf(nested(narstream.MaxDepth+1, reg("")))})
	r := mustNew(t, testRepls, Options{})
	for _, tt := range tests {
		t.Run(tt.Name, func(t *testing.T) {
			err := r.RewriteNAR(io.Discard, bytes.NewReader(tt.NAR))
			if err == nil {
				t.Fatal("RewriteNAR accepted an invalid NAR")
			}
			var le *LeftoverError
			if errors.As(err, &le) {
				t.Fatalf("got a leftover error for a structural problem: %v", err)
			}
		})
	}
}

// TestRewriteNARDeepTree rewrites a tree nested as deep as allowed, with
// files at every level, so the encoder must close many directories at once.
func TestRewriteNARDeepTree(t *testing.T) {
	r := mustNew(t, testRepls, Options{})
	leaf := dir(ent("f", reg(helloX)))
	want := dir(ent("f", reg(helloN)))
	for range narstream.MaxDepth - 1 {
		leaf = dir(ent("a", leaf), ent("b", sym(glibcX)))
		want = dir(ent("a", want), ent("b", sym(glibcN)))
	}
	got, err := rewrite(r, narOf(leaf))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, narOf(want)) {
		t.Fatal("deep tree rewritten wrongly")
	}
}

// nested is a chain of depth directories named "d" around n.
func nested(depth int, n node) node {
	for range depth {
		n = dir(ent("d", n))
	}
	return n
}

// TestRewriteNARReadsExactlyTheNAR checks that bytes after the NAR stay in
// src, as they do when a NAR is embedded in a protocol stream.
func TestRewriteNARReadsExactlyTheNAR(t *testing.T) {
	r := mustNew(t, testRepls, Options{})
	in := narOf(dir(ent("bin", dir(ent("x", exe("\x00"+glibcX))))))
	src := bytes.NewReader(append(bytes.Clone(in), "TRAILER"...))
	if err := r.RewriteNAR(io.Discard, src); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(src)
	if string(rest) != "TRAILER" {
		t.Errorf("left in src: %q, want %q", rest, "TRAILER")
	}
}

// TestRewriteNARStopsReadingOnError checks that an early return leaves no
// goroutine behind that could go on reading src.
func TestRewriteNARStopsReadingOnError(t *testing.T) {
	r := mustNew(t, testRepls, Options{})
	in := narOf(dir(
		ent("a", reg("\x00"+hashOf(glibcX))),
		ent("b", reg(strings.Repeat("x", 1<<20))),
		ent("c", reg("more")),
	))
	before := runtime.NumGoroutine()
	for range 20 {
		src := bytes.NewReader(in)
		err := r.RewriteNAR(io.Discard, src)
		var le *LeftoverError
		if !errors.As(err, &le) || le.File != "/a" {
			t.Fatalf("got %v, want leftover error in /a", err)
		}
		left := src.Len()
		waitGoroutines(t, before)
		if src.Len() != left {
			t.Fatalf("src was read after RewriteNAR returned: %d -> %d bytes left", left, src.Len())
		}
	}
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still running, want %d", runtime.NumGoroutine(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestRewriteNARWriteErrors(t *testing.T) {
	r := mustNew(t, testRepls, Options{TextMax: 16})
	r.chunk = 64 // several flushes per file
	in := narOf(dir(
		ent("a", exe(strings.Repeat("\x00"+glibcX, 2000))),
		ent("b", sym(bashX)),
		ent("c", reg("#!"+bashX)),
	))
	full, err := rewrite(r, in)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for _, n := range []int{0, 1, 100, writeBufSize - 1, writeBufSize, len(full) / 2, len(full) - 1} {
		err := r.RewriteNAR(&failingWriter{n: n}, bytes.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("writer failing after %d bytes: got %v", n, err)
		}
	}
	waitGoroutines(t, before)
}

func TestRewriteNARConcurrent(t *testing.T) {
	r := mustNew(t, testRepls, Options{TextMax: 128})
	r.chunk = 100
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat(fmt.Sprintf("%d\x00", g), g*50+1) + glibcX
			in := narOf(dir(ent("f", reg(body)), ent("t", reg("#!"+bashX))))
			want := narOf(dir(ent("f", reg(strings.Replace(body, glibcX, padded(glibcX, glibcN), 1))), ent("t", reg("#!"+bashN))))
			for range 20 {
				got, err := rewrite(r, in)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("goroutine %d: output mismatch", g)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestGolden pins the exact output bytes of a few representative NARs.
func TestGolden(t *testing.T) {
	tests := []struct {
		name    string
		in      node
		spooled bool // also spooled (over the text limit), to the same bytes
	}{
		{name: "binary-padded", in: exe("\x7fELF\x02\x01\x01\x00" + glibcX + "/lib/ld-linux-aarch64.so.1\x00" + glibcX + "/lib:" + helloX + "/lib\x00")},
		{name: "script-exact", in: exe("#!" + bashX + "/bin/sh\nexec " + helloX + "/bin/hello \"$@\"\n")},
		{name: "tree", in: dir(
			ent("bin", dir(ent("hello", exe("\x00"+glibcX+"\x00"+helloX)))),
			ent("lib", dir(ent("ld.so", sym(glibcX+"/lib/ld-linux-aarch64.so.1")))),
			ent("share", dir(ent("doc", reg("see "+helloX+"/share/doc\n")))),
		)},
		{name: "jar", in: dir(ent("share", dir(ent("java", dir(ent("hello.jar", reg(string(goldenJar())))))))), spooled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rewrite(mustNew(t, testRepls, Options{}), narOf(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.name+".nar")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run: go test ./rewrite -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s; if the change is intended, run: go test ./rewrite -run TestGolden -update\n got: %q\nwant: %q", golden, got, want)
			}
			for _, e := range listNAR(t, got) {
				if strings.HasSuffix(e.Path, ".jar") {
					if _, bad := zipMembers(t, []byte(e.Contents)); len(bad) > 0 {
						t.Errorf("%s: unreadable members: %v", e.Path, bad)
					}
				}
			}
			if tt.spooled {
				spooled, err := rewrite(mustNew(t, testRepls, Options{TextMax: -1, TempDir: t.TempDir()}), narOf(tt.in))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(spooled, want) {
					t.Errorf("spooled output differs from %s\n got: %q\nwant: %q", golden, spooled, want)
				}
			}
		})
	}
}

// goldenJar is a small jar built field by field (raw members, fixed times),
// so its bytes do not depend on archive/zip's choices: a stored class with
// a cross path, a stored member with a data descriptor, a deflated member
// hiding a path, and a manifest without one.
func goldenJar() []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	add := func(name string, method, flags uint16, data string) {
		raw := []byte(data)
		if method == zip.Deflate {
			var c bytes.Buffer
			fw, _ := flate.NewWriter(&c, flate.BestCompression)
			_, _ = io.WriteString(fw, data)
			_ = fw.Close()
			raw = c.Bytes()
		}
		fw, err := w.CreateRaw(&zip.FileHeader{Name: name, Method: method, Flags: flags, Modified: zipModified,
			CRC32: crc32.ChecksumIEEE([]byte(data)), CompressedSize64: uint64(len(raw)), UncompressedSize64: uint64(len(data))})
		if err != nil {
			panic(err)
		}
		_, _ = fw.Write(raw)
	}
	add("META-INF/MANIFEST.MF", zip.Store, 0, "Manifest-Version: 1.0\r\n\r\n")
	add("Hello.class", zip.Store, 0, "\xca\xfe\xba\xbe\x00\x00\x00\x34\x01\x00\x50"+helloX+"/share/hello")
	add("lib.path", zip.Store, 0x8, glibcX+"/lib\n")
	add("notes.txt", zip.Deflate, 0, strings.Repeat("see "+bashX+"\n", 4))
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
