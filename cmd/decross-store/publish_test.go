package main

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/publish"
)

func TestPublishFlagErrors(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--mapping", dir + "/m.json", "--signing-key", dir + "/sk", "--to", "file://" + dir + "/cache"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no destination", []string{"--mapping", "m.json", "--signing-key", "sk"}, "--to are required"},
		{"no key", []string{"--mapping", "m.json", "--to", "file:///x"}, "are required"},
		{"bad compression", append(slices.Clone(base), "--compression", "bzip2"), `--compression "bzip2": want zstd, xz, none`},
		{"bad jobs", append(slices.Clone(base), "--jobs", "0"), "--jobs 0"},
		{"bad priority", append(slices.Clone(base), "--priority", "0"), "--priority 0"},
		{"bad destination", append(slices.Clone(base[:4]), "--to", "http://example.com/"), "want file:///dir or s3://bucket"},
		{"missing mapping", base, "m.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runPublish(t.Context(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runPublish(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestPublishReport(t *testing.T) {
	tests := []struct {
		name               string
		res                publish.Result
		wantStderr, wantEr string
	}{
		{"clean", publish.Result{Total: 3, Published: 1, Skipped: 2, NarBytes: 2048, FileBytes: 1024, Elapsed: time.Second}, "", ""},
		{"leak and failure", publish.Result{Total: 3, Published: 2,
			Problems: map[string]error{"/nix/store/a-leaky": errors.New("leaks")},
			Failed:   map[string]error{"/nix/store/b-x": errors.New("/nix/store/b-x: disk full")}},
			"cannot be served: /nix/store/a-leaky: leaks\nfailed: /nix/store/b-x: disk full\n",
			"1 path failed, 1 mapped path cannot be served (listed above); the rest is published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			reportPublish(&stdout, &stderr, &tt.res, 2, "zstd")
			if lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "published ") {
				t.Errorf("stdout %q, want one summary line", stdout.String())
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
			err := publishErr(&tt.res)
			if (err == nil) != (tt.wantEr == "") || err != nil && err.Error() != tt.wantEr {
				t.Errorf("publishErr = %v, want %q", err, tt.wantEr)
			}
		})
	}
}
