package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckRefusesUnknownSystem: a mapping file naming a system outside
// the platform table is refused with the field and the known systems,
// before any store is opened.
func TestCheckRefusesUnknownSystem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mapping.json")
	if err := os.WriteFile(path, []byte(`{"hostSystem": "sparc64-linux", "paths": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := runCheck(context.Background(), []string{"--mapping", path, "--upstream", "unix:///nonexistent"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `hostSystem: system "sparc64-linux" is not one decross-store knows (known: aarch64-linux`) {
		t.Errorf("check: %v", err)
	}
}
