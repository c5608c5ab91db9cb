package pairing

import (
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		name, suffix, want string
		ok                 bool
	}{
		{"hello-aarch64-unknown-linux-gnu-2.12", suffix, "hello-2.12", true},
		{"hello-aarch64-unknown-linux-gnu-2.12", "-" + suffix, "hello-2.12", true},
		{"foo-1.0-aarch64-unknown-linux-gnu", suffix, "foo-1.0", true},
		{"hello-static-aarch64-unknown-linux-musl-2.12", "aarch64-unknown-linux-musl", "hello-static-2.12", true},
		{"bash-5.2", suffix, "bash-5.2", false},
		// The cross compiler's target prefix is no host suffix.
		{"aarch64-unknown-linux-gnu-gcc-wrapper-12.2.0", suffix, "aarch64-unknown-linux-gnu-gcc-wrapper-12.2.0", false},
		// Part of a longer word is not the suffix.
		{"x-aarch64-unknown-linux-gnueabi-1.0", suffix, "x-aarch64-unknown-linux-gnueabi-1.0", false},
		{"x-aarch64-unknown-linux-gnueabi-1.0-aarch64-unknown-linux-gnu", suffix, "x-aarch64-unknown-linux-gnueabi-1.0", true},
		{"hello-2.12", "", "hello-2.12", false},
		{"", suffix, "", false},
		// Empty segments make no suffix.
		{"0--@", "--@", "0--@", false},
		{"a-b--c-1", "b--c", "a-b--c-1", false},
		{"a-b-1", "b-", "a-b-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := NormalizeName(tt.name, tt.suffix)
			if got != tt.want || ok != tt.ok {
				t.Errorf("NormalizeName(%q, %q) = %q, %v; want %q, %v", tt.name, tt.suffix, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestInferHostSuffix(t *testing.T) {
	tests := []struct {
		native, cross, want, wantErr string
	}{
		{"hello-2.12", "hello-aarch64-unknown-linux-gnu-2.12", suffix, ""},
		{"foo-1.0", "foo-1.0-aarch64-unknown-linux-gnu", suffix, ""},
		{"hello-static-2.12", "hello-static-aarch64-unknown-linux-musl-2.12", "aarch64-unknown-linux-musl", ""},
		{"a-a-1", "a-a-a-1", "a", ""},
		{"greet-data-1.0", "greet-data-1.0", "", ""},
		{"hello-2.12", "hello-2.13", "", "not native name"},
		{"hello-2.12", "goodbye-aarch64-unknown-linux-gnu-2.12", "", "not native name"},
		{"hello-2.12", "hello-2.12-", "", "not native name"},
		{"hello", "helloaarch64", "", "not native name"},
	}
	for _, tt := range tests {
		t.Run(tt.cross, func(t *testing.T) {
			got, err := InferHostSuffix(tt.native, tt.cross)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InferHostSuffix(%q, %q) = %q, %v; want error containing %q", tt.native, tt.cross, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("InferHostSuffix(%q, %q) = %q, %v; want %q", tt.native, tt.cross, got, err, tt.want)
			}
			if n, ok := NormalizeName(tt.cross, got); got != "" && (!ok || n != tt.native) {
				t.Errorf("NormalizeName(%q, %q) = %q, does not undo the inferred suffix", tt.cross, got, n)
			}
		})
	}
}

func FuzzNormalizeName(f *testing.F) {
	f.Add("hello-aarch64-unknown-linux-gnu-2.12", suffix)
	f.Add("foo-1.0-aarch64-unknown-linux-gnu", suffix)
	f.Add("a--b", "-")
	f.Fuzz(func(t *testing.T, name, s string) {
		got, ok := NormalizeName(name, s)
		if !ok && got != name {
			t.Fatalf("NormalizeName(%q, %q) changed the name without a suffix: %q", name, s, got)
		}
		if ok {
			if len(got) >= len(name) {
				t.Fatalf("NormalizeName(%q, %q) = %q, removed nothing", name, s, got)
			}
			// The removal is one whole segment, so inference finds a
			// suffix that undoes it.
			inf, err := InferHostSuffix(got, name)
			if err != nil {
				t.Fatalf("InferHostSuffix(%q, %q): %v", got, name, err)
			}
			if back, _ := NormalizeName(name, inf); back != got {
				t.Fatalf("suffix %q inferred from %q and %q normalises to %q", inf, got, name, back)
			}
		}
	})
}
