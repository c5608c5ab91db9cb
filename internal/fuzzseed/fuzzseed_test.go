package fuzzseed

import (
	"os"
	"path/filepath"
	"testing"
)

type recorder struct {
	testing.TB
	errors int
}

func (r *recorder) Errorf(string, ...any) { r.errors++ }
func (r *recorder) Helper()               {}

func TestCheck(t *testing.T) {
	t.Chdir(t.TempDir())
	seeds := map[string][]byte{"a": []byte("x\x00y"), "b": nil}
	r := &recorder{TB: t}
	Check(r, "FuzzX", seeds, false, "regen")
	if r.errors != 2 {
		t.Fatalf("missing files: %d errors, want 2", r.errors)
	}
	r.errors = 0
	Check(r, "FuzzX", seeds, true, "regen")
	if r.errors != 0 {
		t.Fatalf("after update: %d errors", r.errors)
	}
	got, _ := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzX", "a"))
	if want := "go test fuzz v1\n[]byte(\"x\\x00y\")\n"; string(got) != want {
		t.Fatalf("file = %q, want %q", got, want)
	}
	os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzX", "b"), []byte("stale"), 0o644)
	Check(r, "FuzzX", seeds, false, "regen")
	if r.errors != 1 {
		t.Fatalf("stale file: %d errors, want 1", r.errors)
	}
}
