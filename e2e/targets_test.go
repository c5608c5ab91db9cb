package e2e

import (
	"debug/elf"
	"io"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
)

// TestTargets runs what scripts/demo does on every target the example
// builds for: build the cross set, map the two derivation graphs of the
// demo closure with --strict, serve that mapping over ssh-ng, copy the
// native closure into a fresh store, verify it, and run the rewritten
// programs from the copy under the target's qemu. The server binary and the
// Nix builds are shared with the other tests.
func TestTargets(t *testing.T) {
	for _, tg := range Targets() {
		t.Run(tg.Name, func(t *testing.T) {
			tg.Require(t)
			work := t.TempDir()
			ex := tg.BuildExample(t, filepath.Join(work, "example"))
			main, hello := ex.Get(t, Main), ex.Get(t, "hello")
			programs := []struct{ key, bin string }{{"hello", "bin/hello"}, {"hello-compat", "bin/hello-compat"}}

			// The cross build is the target's code, named as nixpkgs names it,
			// and the native side is of the target's system.
			for _, p := range programs {
				checkELF(t, tg, filepath.Join(ex.Get(t, p.key).Cross, p.bin))
			}
			if want := "-" + tg.Config + "-2.12"; !strings.HasSuffix(hello.Cross, want) {
				t.Errorf("cross hello = %s, want the name to end in %s", hello.Cross, want)
			}
			if got := readDrv(t, main.NativeDrv).Platform; got != tg.System {
				t.Errorf("native %s: system = %q, want %s", main.NativeDrv, got, tg.System)
			}

			mappingFile := filepath.Join(work, "mapping.json")
			if _, stderr, err := runTool(t, "map", "--native", main.NativeDrv, "--cross", main.CrossDrv, "--strict", "-o", mappingFile); err != nil {
				t.Fatalf("map: %v\n%s", err, stderr)
			}
			m := loadMapping(t, mappingFile)
			// build.sh pairs by attribute name; map must find the same pairs
			// for every path of the demo closure.
			byAttr := loadMapping(t, ex.MappingFile)
			var want []mapping.Entry
			for _, p := range Closure(t, main.Cross) {
				if e, ok := byAttr.ByCross(p); ok {
					want = append(want, e)
				}
			}
			sort.Slice(want, func(i, j int) bool { return want[i].Native < want[j].Native })
			if len(want) < 5 || !reflect.DeepEqual(pairedEntries(m), want) {
				t.Fatalf("map of %s = %v\nwant the by-attribute entries of its closure %v", Main, m.Entries(), want)
			}
			// The platforms come from the derivations' systems, and check
			// classifies the target's ELF files as host code.
			if m.HostSystem() != tg.System || m.BuildSystem() != "x86_64-linux" {
				t.Fatalf("map recorded host %q and build %q, want %s and x86_64-linux", m.HostSystem(), m.BuildSystem(), tg.System)
			}
			out, stderr, err := runTool(t, "check", "--mapping", mappingFile)
			if err != nil {
				t.Fatalf("check: %v\n%s", err, stderr)
			}
			elfName := tg.Name
			if tg.Machine == elf.EM_ARM {
				elfName = "armv6l/armv7l" // one ELF machine
			}
			if want := "host: " + elfName + " ELF in "; !strings.Contains(out, want) {
				t.Fatalf("check does not classify any path by its %s ELF files (%q):\n%s", tg.Name, want, out)
			}

			srv := startServer(t, mappingFile)
			ctx := testContext(t, 2*time.Minute)
			dest := filepath.Join(work, "client-store")
			t.Cleanup(func() { makeWritable(t, dest) })
			url := srv.url(srv.clientKey)
			if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, main.Native); err != nil {
				t.Fatal(err)
			}
			if _, _, err := srv.nix(ctx, "", "nix", "store", "verify", "--store", dest, "-r", main.Native); err != nil {
				t.Fatal(err)
			}
			storeDir := filepath.Join(dest, "nix", "store")
			for _, p := range programs {
				prog := filepath.Join(ex.Get(t, p.key).Native, p.bin)
				checkELF(t, tg, filepath.Join(dest, prog))
				got, err := tg.RunInStore(t, storeDir, prog)
				if err != nil {
					t.Fatal(err)
				}
				checkGolden(t, p.key+".stdout", got)
			}
			assertNoCrossHashes(t, storeDir, crossHashes(m))
		})
	}
}

// checkELF fails unless prog is an ELF program of tg whose interpreter is
// tg's loader.
func checkELF(t *testing.T, tg Target, prog string) {
	t.Helper()
	f, err := elf.Open(prog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != tg.Machine || f.Class != tg.Class {
		t.Errorf("%s is %v %v, want %v %v", prog, f.Class, f.Machine, tg.Class, tg.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp, err := io.ReadAll(p.Open())
		if err != nil {
			t.Fatalf("%s: read PT_INTERP: %v", prog, err)
		}
		if got := strings.TrimRight(string(interp), "\x00"); !strings.HasSuffix(got, "/lib/"+tg.Loader) {
			t.Errorf("%s: interpreter %s, want glibc's %s", prog, got, tg.Loader)
		}
		return
	}
	t.Errorf("%s has no interpreter", prog)
}
