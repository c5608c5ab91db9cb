package mapping

import (
	"bytes"
	"strings"
	"testing"
)

const (
	nHello = "/nix/store/00000000000000000000000000000001-hello-2.12"
	cHello = "/nix/store/00000000000000000000000000000002-hello-aarch64-unknown-linux-gnu-2.12"
	nGlibc = "/nix/store/00000000000000000000000000000003-glibc-2.36"
	cGlibc = "/nix/store/00000000000000000000000000000004-glibc-aarch64-unknown-linux-gnu-2.36"
	drv    = "/nix/store/00000000000000000000000000000005-hello-2.12.drv"
)

func TestParseValid(t *testing.T) {
	in := `{"paths": [
	  {"native": "` + nHello + `", "cross": "` + cHello + `", "deriver": "` + drv + `", "output": "out"},
	  {"native": "` + nGlibc + `", "cross": "` + cGlibc + `", "pairedBy": "name, as an input of ` + drv + `"}]}`
	m, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.ByNative(nHello); !ok || e.Cross != cHello || e.Deriver != drv || e.Output != "out" {
		t.Errorf("ByNative(hello) = %+v, %v", e, ok)
	}
	if e, ok := m.ByCross(cGlibc); !ok || e.Native != nGlibc || e.PairedBy != "name, as an input of "+drv {
		t.Errorf("ByCross(glibc) = %+v, %v", e, ok)
	}
	if _, ok := m.ByNative(cHello); ok {
		t.Error("cross path found as native")
	}
	var out bytes.Buffer
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	want := `{"paths": [
  {"native":"` + nHello + `","cross":"` + cHello + `","deriver":"` + drv + `","output":"out"},
  {"native":"` + nGlibc + `","cross":"` + cGlibc + `","pairedBy":"name, as an input of ` + drv + `"}
]}
`
	if out.String() != want {
		t.Errorf("Write =\n%s\nwant\n%s", out.String(), want)
	}
	m2, err := Parse(&out)
	if err != nil {
		t.Fatalf("written file does not load: %v", err)
	}
	if m2.Len() != 2 {
		t.Errorf("reloaded %d entries", m2.Len())
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not json", `{`, "parse mapping"},
		{"no paths", `{}`, `no "paths"`},
		{"unknown field", `{"paths": [{"natve": "` + nHello + `", "cross": "` + cHello + `"}]}`, "unknown field"},
		{"native not a store path", `{"paths": [{"native": "/tmp/hello", "cross": "` + cHello + `"}]}`, `native "/tmp/hello"`},
		{"cross not a store path", `{"paths": [{"native": "` + nHello + `", "cross": "/nix/store/short-x"}]}`, `cross "/nix/store/short-x"`},
		{"trailing slash", `{"paths": [{"native": "` + nHello + `/", "cross": "` + cHello + `"}]}`, "without anything after the name"},
		{"dot-dot", `{"paths": [{"native": "` + nHello + `/../00000000000000000000000000000009-x", "cross": "` + cHello + `"}]}`, "without anything after the name"},
		{"same path", `{"paths": [{"native": "` + nHello + `", "cross": "` + nHello + `"}]}`, "same path"},
		{"native twice", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `"}, {"native": "` + nHello + `", "cross": "` + cGlibc + `"}]}`, "native path " + nHello + " is already mapped by entry 0"},
		{"cross twice", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `"}, {"native": "` + nGlibc + `", "cross": "` + cHello + `"}]}`, "cross path " + cHello + " is already used by entry 0"},
		{"native hash part twice", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `"}, {"native": "/nix/store/00000000000000000000000000000001-hello-2.13", "cross": "` + cGlibc + `"}]}`, "native path /nix/store/00000000000000000000000000000001-hello-2.13 has the hash part of entry 0's native path " + nHello},
		{"native is another cross", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `"}, {"native": "` + cHello + `", "cross": "` + cGlibc + `"}]}`, "has the hash part of entry 0's cross path"},
		{"bad deriver", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `", "deriver": "` + nGlibc + `"}]}`, "not a .drv"},
		{"trailing", `{"paths": []} {}`, "trailing"},
		{"control character in pairedBy", `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `", "pairedBy": "name\nproblems: 0"}]}`, `mapping entry 0: pairedBy "name\nproblems: 0" has a control character`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestWriteIsSorted: a mapping is written sorted by native path whatever
// the order it was built in, so map's output is stable.
func TestWriteIsSorted(t *testing.T) {
	m, err := New([]Entry{{Native: nGlibc, Cross: cGlibc}, {Native: nHello, Cross: cHello}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	want := `{"paths": [
  {"native":"` + nHello + `","cross":"` + cHello + `"},
  {"native":"` + nGlibc + `","cross":"` + cGlibc + `"}
]}
`
	if out.String() != want {
		t.Errorf("Write =\n%s\nwant\n%s", out.String(), want)
	}
}

// TestSystems: the platforms are optional top-level fields, written before
// the paths, and must be systems the platform table knows.
func TestSystems(t *testing.T) {
	in := `{"paths": [{"native": "` + nHello + `", "cross": "` + cHello + `"}], "buildSystem": "aarch64-linux", "hostSystem": "x86_64-linux"}`
	m, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if m.HostSystem() != "x86_64-linux" || m.BuildSystem() != "aarch64-linux" {
		t.Errorf("systems %q, %q", m.HostSystem(), m.BuildSystem())
	}
	var out bytes.Buffer
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	want := `{"hostSystem": "x86_64-linux",
 "buildSystem": "aarch64-linux",
 "paths": [
  {"native":"` + nHello + `","cross":"` + cHello + `"}
]}
`
	if out.String() != want {
		t.Errorf("Write =\n%s\nwant\n%s", out.String(), want)
	}
	again, err := Parse(bytes.NewReader(out.Bytes()))
	if err != nil || again.HostSystem() != "x86_64-linux" || again.BuildSystem() != "aarch64-linux" {
		t.Fatalf("reloaded: %v, %+v", err, again)
	}

	// An older file has neither.
	old, err := Parse(strings.NewReader(`{"paths": []}`))
	if err != nil || old.HostSystem() != "" || old.BuildSystem() != "" {
		t.Fatalf("old file: %v, %q, %q", err, old.HostSystem(), old.BuildSystem())
	}
	both, err := old.WithSystems("riscv64-linux", "x86_64-linux")
	if err != nil {
		t.Fatal(err)
	}
	if old.HostSystem() != "" || both.HostSystem() != "riscv64-linux" || both.BuildSystem() != "x86_64-linux" {
		t.Errorf("WithSystems: old %q, new %q, %q", old.HostSystem(), both.HostSystem(), both.BuildSystem())
	}
	one, err := old.WithSystems("s390x-linux", "")
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := one.Write(&out); err != nil {
		t.Fatal(err)
	}
	if want := "{\"hostSystem\": \"s390x-linux\",\n \"paths\": []}\n"; out.String() != want {
		t.Errorf("Write = %q, want %q", out.String(), want)
	}

	for _, bad := range []struct{ in, wantErr string }{
		{`{"hostSystem": "sparc64-linux", "paths": []}`, `hostSystem: system "sparc64-linux" is not one decross-store knows`},
		{`{"buildSystem": "", "paths": []}`, `buildSystem: system "" is not one`},
		{`{"hostSystem": 7, "paths": []}`, "parse mapping"},
	} {
		if _, err := Parse(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.wantErr) {
			t.Errorf("Parse(%s) err = %v, want %q", bad.in, err, bad.wantErr)
		}
	}
	if _, err := old.WithSystems("aarch64-darwin", ""); err == nil || !strings.Contains(err.Error(), `host system: system "aarch64-darwin"`) {
		t.Errorf("WithSystems(aarch64-darwin) err = %v", err)
	}
}
