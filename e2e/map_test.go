package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
)

// runTool runs the decross-store binary and returns stdout, stderr and
// the exit error.
func runTool(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(testContext(t, 2*time.Minute), serverBinary(t), args...)
	cmd.Env = NixEnv()
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// pairsFile writes one {native, cross} pair of .drv paths per attribute of
// the example set: the roots map starts from.
func pairsFile(t *testing.T, ex Example, dir string) string {
	t.Helper()
	type pair struct {
		Native string `json:"native"`
		Cross  string `json:"cross"`
	}
	seen := map[string]bool{}
	var pairs []pair
	for _, o := range ex.Outputs {
		if !seen[o.Attr] {
			seen[o.Attr] = true
			pairs = append(pairs, pair{o.NativeDrv, o.CrossDrv})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Native < pairs[j].Native })
	b, err := json.Marshal(pairs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pairs.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadMapping(t *testing.T, path string) *mapping.Mapping {
	t.Helper()
	m, err := mapping.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pairedEntries returns m's entries without the reasons map records, for
// comparing what was paired with hand-written mappings.
func pairedEntries(m *mapping.Mapping) []mapping.Entry {
	es := m.Entries()
	for i := range es {
		es[i].PairedBy = ""
	}
	return es
}

// without returns m's entries without the native path skip.
func without(m *mapping.Mapping, skip string) []mapping.Entry {
	var es []mapping.Entry
	for _, e := range m.Entries() {
		if e.Native != skip {
			es = append(es, e)
		}
	}
	return es
}

// TestMap pairs the example's derivation graphs and compares the result
// with the mapping example/build.sh writes by attribute name.
func TestMap(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	byAttr := loadMapping(t, ex.MappingFile)
	pairs := pairsFile(t, ex, work)
	bash, leaky := ex.Get(t, "bash"), ex.Get(t, "leaky")

	t.Run("every attribute, build platform allowed", func(t *testing.T) {
		out := filepath.Join(work, "all.json")
		if _, stderr, err := runTool(t, "map", "--pairs", pairs, "--allow-build-platform", "-o", out); err != nil {
			t.Fatalf("map: %v\n%s", err, stderr)
		}
		got := loadMapping(t, out)
		if !reflect.DeepEqual(pairedEntries(got), byAttr.Entries()) {
			t.Errorf("map-produced mapping differs from %s\ngot  %v\nwant %v", ex.MappingFile, got.Entries(), byAttr.Entries())
		}
		// Written stably: the same bytes as mapping.Write of the entries
		// (with their reasons), with the platforms of the roots'
		// derivations.
		raw, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got.Entries() {
			if e.PairedBy == "" {
				t.Errorf("entry of %s does not record why it was paired", e.Native)
			}
		}
		canon, err := got.WithSystems("aarch64-linux", "x86_64-linux")
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := canon.Write(&want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, want.Bytes()) {
			t.Errorf("%s is not in the canonical layout:\n%s", out, raw)
		}
	})

	t.Run("every attribute, build platform left out and reported", func(t *testing.T) {
		out := filepath.Join(work, "host.json")
		_, stderr, err := runTool(t, "map", "--pairs", pairs, "-o", out)
		if err != nil {
			t.Fatalf("map: %v\n%s", err, stderr)
		}
		got := loadMapping(t, out)
		if want := without(byAttr, bash.Native); !reflect.DeepEqual(pairedEntries(got), want) {
			t.Errorf("mapping = %v\nwant %v", got.Entries(), want)
		}
		for _, want := range []string{
			leaky.Cross + " references build-platform " + bash.Cross,
			"in /bin/hello-bash-wrapper",
			"native derivation of the same name: " + bash.NativeDrv,
			bash.Cross + ": build-platform path",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("map stderr lacks %q:\n%s", want, stderr)
			}
		}
		// A failed --strict run leaves the file it would write as it was.
		before, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, append(before, ' '), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, err = runTool(t, "map", "--pairs", pairs, "--strict", "-o", out)
		if err == nil || !strings.Contains(stderr, "; "+out+" left as it was") {
			t.Errorf("map --strict despite the leak: %v\n%s", err, stderr)
		}
		if after, _ := os.ReadFile(out); !bytes.Equal(after, append(before, ' ')) {
			t.Errorf("map --strict changed %s although it failed", out)
		}
	})

	t.Run("one root, suffix inferred from its inputs", func(t *testing.T) {
		main := ex.Get(t, Main)
		out := filepath.Join(work, "main.json")
		if _, stderr, err := runTool(t, "map", "--native", main.NativeDrv, "--cross", main.CrossDrv, "-o", out); err != nil {
			t.Fatalf("map: %v\n%s", err, stderr)
		}
		got := loadMapping(t, out)
		closure := Closure(t, main.Cross)
		var want []mapping.Entry
		for _, p := range closure {
			if e, ok := byAttr.ByCross(p); ok {
				want = append(want, e)
			}
		}
		sort.Slice(want, func(i, j int) bool { return want[i].Native < want[j].Native })
		if len(want) < 5 || !reflect.DeepEqual(pairedEntries(got), want) {
			t.Errorf("mapping of %s = %v\nwant the by-attribute entries of its closure %v", Main, got.Entries(), want)
		}
	})

	t.Run("errors name what could not be paired", func(t *testing.T) {
		hello, compat := ex.Get(t, "hello"), ex.Get(t, "hello-compat")
		_, stderr, err := runTool(t, "map", "--native", compat.NativeDrv, "--cross", hello.CrossDrv, "-o", filepath.Join(work, "bad.json"))
		if err == nil || !strings.Contains(stderr, hello.CrossDrv) {
			t.Errorf("map of unrelated roots: err %v, stderr %q; want an error naming %s", err, stderr, hello.CrossDrv)
		}
	})
}

// TestCheck runs the dry run on build.sh's mapping: it serves bash by name,
// so check must report the shebang leak with the file that holds it.
func TestCheck(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	bash, leaky, hello := ex.Get(t, "bash"), ex.Get(t, "leaky"), ex.Get(t, "hello")
	stdout, stderr, err := runTool(t, "check", "--mapping", ex.MappingFile)
	if err == nil || !strings.Contains(stderr, "0 problems, 1 leak\n") {
		t.Errorf("check: err %v, stderr %q; want a failure for the leak", err, stderr)
	}
	for _, want := range []string{
		leaky.Cross + " references build-platform " + bash.Cross + "\n    in /bin/hello-bash-wrapper\n",
		"mapped anyway to a native path of " + bash.NativeDrv,
		"  serve " + bash.Native + "\n     from " + bash.Cross + "\n        build-platform: x86_64 ELF in /bin/bash",
		"  serve " + hello.Native + "\n     from " + hello.Cross + "\n        host: aarch64 ELF in /bin/hello",
		"  serve " + leaky.Native + "\n     from " + leaky.Cross + "\n        platform-neutral: no ELF files",
		"problems: 0",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, stdout)
		}
	}

	// Without bash in the mapping the leak is still there, and bash is now
	// a path nothing can be served against.
	host, _ := servableMapping(t, ex, work)
	stdout, _, err = runTool(t, "check", "--mapping", host)
	if err == nil || !strings.Contains(stdout, bash.Cross+": input-addressed and not in the mapping") ||
		!strings.Contains(stdout, "native derivation of the same name: "+bash.NativeDrv) {
		t.Errorf("check without bash: err %v\n%s", err, stdout)
	}
}

// TestMapServe serves the mapping map wrote (without the build-platform
// bash) and copies the demo closure from it with the real nix client.
func TestMapServe(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	out := filepath.Join(work, "mapped.json")
	if _, stderr, err := runTool(t, "map", "--pairs", pairsFile(t, ex, work), "-o", out); err != nil {
		t.Fatalf("map: %v\n%s", err, stderr)
	}
	srv := startServer(t, out)
	ctx := testContext(t, 5*time.Minute)
	dest := filepath.Join(work, "client-store")
	t.Cleanup(func() { makeWritable(t, dest) })
	main := ex.Get(t, Main)
	if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", srv.url(srv.clientKey), "--to", dest, main.Native); err != nil {
		t.Fatal(err)
	}
	hello := ex.Get(t, "hello")
	got, err := RunInStore(t, filepath.Join(dest, "nix", "store"), filepath.Join(hello.Native, "bin/hello"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "hello.stdout", got)
	// The leaky script references the unmapped x86_64 bash: refused.
	leaky := ex.Get(t, "leaky")
	_, stderr, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", srv.url(srv.clientKey), "--to", dest, leaky.Native)
	if err == nil {
		t.Errorf("copying %s succeeded although it references the build-platform bash", leaky.Native)
	}
	for _, want := range []string{leaky.Native, leaky.Cross, ex.Get(t, "bash").Cross, "not in the mapping"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal of the leaky script does not mention %q:\n%s", want, stderr)
		}
	}
}
