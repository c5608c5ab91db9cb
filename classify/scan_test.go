package classify

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/decross-store/decross-store/internal/testenv"
	"github.com/decross-store/decross-store/platform"
)

var (
	x86_64  = platform.ELF{Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}
	aarch64 = platform.ELF{Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}
)

const (
	bash  = "/nix/store/0c8v6bw9zkf7mpn6fr6jvxqg8j3v9x2b-bash-5.1-p16"
	glibc = "/nix/store/1bmxp2d3m8hvh6kfs1yydhqkfvr4xxjl-glibc-aarch64-unknown-linux-gnu-2.35"
	other = "/nix/store/2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-unrelated-1.0"
)

// narOf dumps a directory tree built by fill into a NAR.
func narOf(t testing.TB, fill func(dir string)) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	fill(dir)
	var buf bytes.Buffer
	if err := nar.DumpPath(&buf, dir); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		testenv.SkipOrFail(t, "need %s (apt-get install -y binutils libc6-dev-arm64-cross): %v", from, err)
	}
	write(t, to, b, 0o755)
}

func write(t testing.TB, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

func TestScan(t *testing.T) {
	// The mixed tree takes its x86_64 ELF from this machine's /bin/true.
	if runtime.GOARCH != "amd64" {
		testenv.SkipOrFail(t, "TestScan needs an x86_64 machine, not %s", runtime.GOARCH)
	}
	// A hash that straddles the 64 KiB read boundary must still be found:
	// glibc's hash part (32 characters after "/nix/store/") starts 16 bytes
	// before the boundary.
	straddle := bytes.Repeat([]byte{'.'}, 64<<10-len("/nix/store/")-16)
	straddle = append(straddle, []byte(glibc+"/lib/libc.so.6")...)

	tests := []struct {
		name      string
		fill      func(t *testing.T, dir string)
		machines  map[platform.ELF][]string
		foreign   map[string][]string
		refs      map[string][]string
		summaryIn string
	}{
		{
			name: "mixed tree",
			fill: func(t *testing.T, dir string) {
				copyFile(t, "/bin/true", filepath.Join(dir, "bin/tool"))
				copyFile(t, "/usr/aarch64-linux-gnu/lib/crt1.o", filepath.Join(dir, "lib/crt1.o"))
				write(t, filepath.Join(dir, "bin/leaky"), []byte("#!"+bash+"/bin/bash\necho hi\n"), 0o755)
				write(t, filepath.Join(dir, "share/big"), straddle, 0o644)
				if err := os.Symlink(glibc+"/lib/libc.so.6", filepath.Join(dir, "lib/libc.so.6")); err != nil {
					t.Fatal(err)
				}
			},
			machines: map[platform.ELF][]string{
				x86_64:  {"/bin/tool"},
				aarch64: {"/lib/crt1.o"},
			},
			refs: map[string][]string{
				bash:  {"/bin/leaky"},
				glibc: {"/lib/libc.so.6", "/share/big"},
			},
			summaryIn: "x86_64 ELF (1 files, e.g. /bin/tool)",
		},
		{
			name: "single file root",
			fill: func(t *testing.T, dir string) {
				write(t, dir, []byte("#! "+bash+"/bin/sh\n"+other[:20]+"\n"), 0o755)
			},
			machines:  map[platform.ELF][]string{},
			refs:      map[string][]string{bash: {"/"}},
			summaryIn: "no ELF files",
		},
		{
			name: "short and truncated ELF headers are not ELF",
			fill: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "a"), []byte("\x7fELF\x02\x01"), 0o644)
				write(t, filepath.Join(dir, "b"), []byte{}, 0o644)
				write(t, filepath.Join(dir, "c"), []byte("\x7fELF\x02\x03\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"), 0o644)
			},
			machines:  map[platform.ELF][]string{},
			refs:      map[string][]string{},
			summaryIn: "no ELF files",
		},
		{
			// Nix records a reference found in an entry name, as in the
			// NAR of a profile or a directory of links.
			name: "entry name",
			fill: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "links", bash[len("/nix/store/"):], "x"), []byte("data"), 0o644)
			},
			machines:  map[platform.ELF][]string{},
			refs:      map[string][]string{bash: {"/links/" + bash[len("/nix/store/"):]}},
			summaryIn: "no ELF files",
		},
		{
			name: "big-endian header",
			fill: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "be"), []byte("\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x2b rest"), 0o644)
			},
			machines:  map[platform.ELF][]string{{Machine: elf.EM_SPARCV9, Class: elf.ELFCLASS64, Data: elf.ELFDATA2MSB}: {"/be"}},
			refs:      map[string][]string{},
			summaryIn: "EM_SPARCV9 64-bit big-endian ELF (1 files, e.g. /be)",
		},
		{
			// aarch64_be is another platform than aarch64; EM_ARM is
			// armv6l and armv7l alike.
			name: "class and byte order",
			fill: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "be"), []byte("\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7"), 0o644)
				write(t, filepath.Join(dir, "arm"), []byte("\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00"), 0o644)
			},
			machines: map[platform.ELF][]string{
				{Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2MSB}: {"/be"},
				{Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}:     {"/arm"},
			},
			refs:      map[string][]string{},
			summaryIn: "armv6l/armv7l ELF (1 files, e.g. /arm), EM_AARCH64 64-bit big-endian ELF (1 files, e.g. /be)",
		},
		{
			name: "Mach-O and PE",
			fill: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "macho"), machOHeader(0x0100000c), 0o755)
				write(t, filepath.Join(dir, "fat"), []byte("\xca\xfe\xba\xbe\x00\x00\x00\x02rest"), 0o755)
				write(t, filepath.Join(dir, "boot.efi"), peHeader(0x8664), 0o644)
				// A Java class file starts with the universal magic.
				write(t, filepath.Join(dir, "A.class"), []byte("\xca\xfe\xba\xbe\x00\x00\x00\x41rest"), 0o644)
			},
			machines:  map[platform.ELF][]string{},
			foreign:   map[string][]string{"Mach-O arm64": {"/macho"}, "Mach-O universal": {"/fat"}, "PE x86-64": {"/boot.efi"}},
			refs:      map[string][]string{},
			summaryIn: "Mach-O arm64 (1 files, e.g. /macho), Mach-O universal (1 files, e.g. /fat), PE x86-64 (1 files, e.g. /boot.efi)",
		},
	}
	s, err := NewScanner([]string{bash, glibc, other})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := narOf(t, func(dir string) { tt.fill(t, dir) })
			res, err := s.Scan(bytes.NewReader(n))
			if err != nil {
				t.Fatal(err)
			}
			gotForeign := map[string][]string{}
			for k, f := range res.Foreign {
				gotForeign[k] = f.Names
			}
			if tt.foreign == nil {
				tt.foreign = map[string][]string{}
			}
			if !reflect.DeepEqual(gotForeign, tt.foreign) {
				t.Errorf("foreign = %v, want %v", gotForeign, tt.foreign)
			}
			got := map[platform.ELF][]string{}
			for m, f := range res.Machines {
				got[m] = f.Names
				if f.Count != len(f.Names) {
					t.Errorf("machine %v: count %d, %d names", m, f.Count, len(f.Names))
				}
			}
			if !reflect.DeepEqual(got, tt.machines) {
				t.Errorf("machines = %v, want %v", got, tt.machines)
			}
			gotRefs := map[string][]string{}
			for p, f := range res.Refs {
				gotRefs[p] = f.Names
			}
			if !reflect.DeepEqual(gotRefs, tt.refs) {
				t.Errorf("refs = %v, want %v", gotRefs, tt.refs)
			}
			if s := res.Summary(); !strings.Contains(s, tt.summaryIn) {
				t.Errorf("Summary() = %q, want it to contain %q", s, tt.summaryIn)
			}
		})
	}
}

func TestScanCapsFileLists(t *testing.T) {
	n := narOf(t, func(dir string) {
		for i := 0; i < MaxFiles+5; i++ {
			write(t, filepath.Join(dir, "f", string(rune('a'+i))), []byte(bash), 0o644)
		}
	})
	s, err := NewScanner([]string{bash})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Scan(bytes.NewReader(n))
	if err != nil {
		t.Fatal(err)
	}
	f := res.Refs[bash]
	if f == nil || f.Count != MaxFiles+5 || len(f.Names) != MaxFiles {
		t.Fatalf("refs = %+v, want count %d with %d names", f, MaxFiles+5, MaxFiles)
	}
}

func TestScanErrors(t *testing.T) {
	if _, err := NewScanner([]string{"/tmp/not-a-store-path"}); err == nil || !strings.Contains(err.Error(), "/tmp/not-a-store-path") {
		t.Errorf("NewScanner(bad) err = %v", err)
	}
	s, err := NewScanner([]string{bash})
	if err != nil {
		t.Fatal(err)
	}
	good := narOf(t, func(dir string) { write(t, filepath.Join(dir, "x"), []byte("hello"), 0o644) })
	// "hello" is followed by three zero bytes of padding.
	badPadding := bytes.Clone(good)
	badPadding[bytes.Index(badPadding, []byte("hello"))+6] = 1
	deep := narOf(t, func(dir string) {
		write(t, filepath.Join(dir, strings.Repeat("d/", 300), "x"), nil, 0o644)
	})
	tests := map[string]struct {
		in      []byte
		wantSub string
	}{
		"empty":             {nil, "magic"},
		"not a nar":         {[]byte("hello world, this is not a nar file at all"), "magic"},
		"non-zero padding":  {badPadding, "/x: non-zero padding"},
		"nested too deeply": {deep, "nested more than"},
	}
	// Cut anywhere, including at token boundaries that a lenient reader
	// takes for a clean end.
	for n := range len(good) {
		tests[fmt.Sprintf("truncated at %d", n)] = struct {
			in      []byte
			wantSub string
		}{good[:n], "unexpected EOF"}
	}
	for name, tt := range tests {
		res, err := s.Scan(bytes.NewReader(tt.in))
		if err == nil {
			t.Errorf("%s: accepted, NarSize %d", name, res.NarSize)
			continue
		}
		if !strings.Contains(err.Error(), "read nar") || !strings.Contains(err.Error(), tt.wantSub) {
			t.Errorf("%s: err = %v, want a read nar error mentioning %q", name, err, tt.wantSub)
		}
	}
	// The scanner is usable again after an error.
	if _, err := s.Scan(bytes.NewReader(good)); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

// TestScanReadsExactlyTheNAR checks NarSize and that bytes after the NAR
// stay unread, as they must when the NAR comes from a protocol stream.
func TestScanReadsExactlyTheNAR(t *testing.T) {
	s, err := NewScanner(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := narOf(t, func(dir string) { write(t, filepath.Join(dir, "x"), []byte("hello"), 0o644) })
	src := bytes.NewReader(append(bytes.Clone(good), "TRAILER"...))
	res, err := s.Scan(src)
	if err != nil || res.NarSize != uint64(len(good)) {
		t.Fatalf("Scan = %+v, %v; want NarSize %d", res, err, len(good))
	}
	if rest, _ := io.ReadAll(src); string(rest) != "TRAILER" {
		t.Errorf("left unread: %q, want %q", rest, "TRAILER")
	}
}

func FuzzScan(f *testing.F) {
	f.Add([]byte("nix-archive-1"))
	s, err := NewScanner([]string{bash, glibc})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := s.Scan(bytes.NewReader(b))
		if err != nil {
			return
		}
		for p, fl := range res.Refs {
			if p != bash && p != glibc {
				t.Fatalf("reported reference %q that is not a candidate", p)
			}
			if fl.Count < len(fl.Names) || len(fl.Names) > MaxFiles {
				t.Fatalf("bad file list %+v", fl)
			}
		}
	})
}

func BenchmarkScan(b *testing.B) {
	content := bytes.Repeat([]byte("some text /nix/store/ with a path "+bash+"/bin/bash and more\x00"), 1<<14)
	n := narOf(b, func(dir string) { write(b, filepath.Join(dir, "f"), content, 0o644) })
	s, err := NewScanner([]string{bash, glibc, other})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(n)))
	for b.Loop() {
		if _, err := s.Scan(bytes.NewReader(n)); err != nil {
			b.Fatal(err)
		}
	}
}
