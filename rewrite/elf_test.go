package rewrite

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/decross-store/decross-store/internal/testenv"
)

// TestRewrittenELFRuns builds a real aarch64 program whose interpreter,
// RUNPATH and a string constant name cross store paths, rewrites its NAR to
// the shorter native paths and runs it under qemu-aarch64 in a mount
// namespace where /nix/store holds only the native paths.
func TestRewrittenELFRuns(t *testing.T) {
	for _, tool := range []string{"aarch64-linux-gnu-gcc", "qemu-aarch64"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "%s not installed", tool)
		}
	}
	tmp := t.TempDir()
	interp := glibcX + "/lib/ld-linux-aarch64.so.1"
	self := helloX + "/share/hello"
	src := filepath.Join(tmp, "hello.c")
	prog := "#include <stdio.h>\n" +
		"static const char self[] = \"" + self + "\";\n" +
		"int main(void) { printf(\"hello from aarch64\\n%s\\n\", self); return 0; }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	build := filepath.Join(tmp, "build")
	if err := os.MkdirAll(filepath.Join(build, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "aarch64-linux-gnu-gcc", "-O1", "-o", filepath.Join(build, "bin", "hello"), src,
		"-Wl,--dynamic-linker="+interp, "-Wl,-rpath,"+glibcX+"/lib", "-Wl,--enable-new-dtags")

	var in bytes.Buffer
	if err := nar.DumpPath(&in, build); err != nil {
		t.Fatal(err)
	}
	r := mustNew(t, []Replacement{{From: glibcX, To: glibcN}, {From: helloX, To: helloN}}, Options{})
	out, err := rewrite(r, in.Bytes())
	if err != nil {
		t.Fatalf("RewriteNAR: %v", err)
	}

	// The fake store: the rewritten program and Debian's aarch64 glibc,
	// both under their native names only.
	store := filepath.Join(tmp, "store")
	unpack(t, out, filepath.Join(store, filepath.Base(helloN)))
	glibcLib := filepath.Join(store, filepath.Base(glibcN), "lib")
	if err := os.MkdirAll(glibcLib, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ld-linux-aarch64.so.1", "libc.so.6"} {
		b, err := os.ReadFile(filepath.Join("/usr/aarch64-linux-gnu/lib", f))
		if err != nil {
			testenv.SkipOrFail(t, "Debian aarch64 libc missing: %v", err)
		}
		if err := os.WriteFile(filepath.Join(glibcLib, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(store, filepath.Base(helloN), "bin", "hello")
	orig, _ := os.ReadFile(filepath.Join(build, "bin", "hello"))
	rewritten, _ := os.ReadFile(bin)
	if len(orig) != len(rewritten) {
		t.Errorf("binary size changed: %d -> %d", len(orig), len(rewritten))
	}

	paddedInterp := padded(glibcX, glibcN) + "/lib/ld-linux-aarch64.so.1"
	if got := run(t, "readelf", "-l", bin); !strings.Contains(got, "[Requesting program interpreter: "+paddedInterp+"]") {
		t.Errorf("readelf -l does not show the padded interpreter %s:\n%s", paddedInterp, got)
	}
	if got := run(t, "readelf", "-d", bin); !strings.Contains(got, "Library runpath: ["+padded(glibcX, glibcN)+"/lib]") {
		t.Errorf("readelf -d does not show the padded RUNPATH:\n%s", got)
	}

	// Bind the fake store over /nix/store in a private mount namespace and
	// check that the cross paths really are absent there.
	args := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	script := `mount --bind "$1" /nix/store || exit 97
[ ! -e "$2" ] && [ ! -e "$3" ] || exit 98
exec qemu-aarch64 "$4"`
	args = append(args, "sh", "-c", script, "sh", store, glibcX, helloX, helloN+"/bin/hello")
	got := run(t, "unshare", args...)
	want := "hello from aarch64\n" + padded(helloX, helloN) + "/share/hello\n"
	if got != want {
		t.Errorf("program output %q, want %q", got, want)
	}

	// Control: the unrewritten program cannot run there.
	args[len(args)-1] = filepath.Join(build, "bin", "hello")
	if out, err := exec.Command("unshare", args...).CombinedOutput(); err == nil {
		t.Errorf("the cross-built program ran without its cross glibc: %s", out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// unpack writes a NAR's tree to dir.
func unpack(t *testing.T, b []byte, dir string) {
	t.Helper()
	for _, e := range listNAR(t, b) {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		var err error
		switch e.Type {
		case string(nar.TypeDirectory):
			err = os.MkdirAll(p, 0o755)
		case string(nar.TypeSymlink):
			err = os.Symlink(e.Target, p)
		default:
			mode := os.FileMode(0o644)
			if e.Executable {
				mode = 0o755
			}
			err = os.WriteFile(p, []byte(e.Contents), mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
