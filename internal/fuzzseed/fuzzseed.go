// Package fuzzseed keeps the committed seed corpora of fuzz targets in step
// with the seeds their tests define, in the file format `go test -fuzz`
// reads (testdata/fuzz/<target>/<name>).
package fuzzseed

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// File is the corpus file content for one []byte seed.
func File(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// Check fails t for every seed whose corpus file under
// testdata/fuzz/<target> is missing or differs, after writing them all when
// update is set. regen is the command that updates them, for the message.
func Check(t testing.TB, target string, seeds map[string][]byte, update bool, regen string) {
	t.Helper()
	for name, data := range seeds {
		file := filepath.Join("testdata", "fuzz", target, name)
		want := File(data)
		if update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale; run: %s", file, regen)
		}
	}
}
