package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/decross-store/decross-store/internal/testenv"
)

// nixConfig is what every nix invocation in the tests runs with: there is
// no binary cache to reach, and the builders are impure.
const nixConfig = "experimental-features = nix-command\nsandbox = false\nsubstituters ="

// DaemonSocket is where nix-daemon listens and where NIX_REMOTE=daemon
// clients connect.
const DaemonSocket = "/nix/var/nix/daemon-socket/socket"

var updateRunOutput = flag.Bool("update-run-output", false, "rewrite e2e/testdata/*.stdout from the programs' actual output")

// Target is a host platform example/pkgs.nix builds for, and what the
// tests need to build and run its programs.
type Target struct {
	Name    string      // pkgs.nix's target, build.sh's second argument: "riscv64"
	Config  string      // the host suffix without its dash: "riscv64-unknown-linux-gnu"
	System  string      // the Nix system of a native build: "riscv64-linux"
	CC      string      // Debian's cross compiler: "riscv64-linux-gnu-gcc"
	Qemu    string      // the user-mode emulator that runs its programs: "qemu-riscv64"
	Debs    string      // the Debian packages of CC and its C library
	Loader  string      // glibc's dynamic loader: "ld-linux-riscv64-lp64d.so.1"
	Machine elf.Machine // of its programs
	Class   elf.Class   // of its programs
}

// Aarch64 is the example's default target, the one most tests use.
var Aarch64 = Target{
	Name: "aarch64", Config: "aarch64-unknown-linux-gnu", System: "aarch64-linux",
	CC: "aarch64-linux-gnu-gcc", Qemu: "qemu-aarch64", Debs: "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
	Loader: "ld-linux-aarch64.so.1", Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64,
}

// Targets returns every target of example/pkgs.nix, Aarch64 first.
func Targets() []Target {
	return []Target{
		Aarch64,
		{
			Name: "riscv64", Config: "riscv64-unknown-linux-gnu", System: "riscv64-linux",
			CC: "riscv64-linux-gnu-gcc", Qemu: "qemu-riscv64", Debs: "gcc-riscv64-linux-gnu libc6-dev-riscv64-cross",
			Loader: "ld-linux-riscv64-lp64d.so.1", Machine: elf.EM_RISCV, Class: elf.ELFCLASS64,
		},
		{
			Name: "armv7l", Config: "armv7l-unknown-linux-gnueabihf", System: "armv7l-linux",
			CC: "arm-linux-gnueabihf-gcc", Qemu: "qemu-arm", Debs: "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
			Loader: "ld-linux-armhf.so.3", Machine: elf.EM_ARM, Class: elf.ELFCLASS32,
		},
	}
}

// RequireNix skips the test when nix, nix-daemon, qemu-aarch64 or
// aarch64-linux-gnu-gcc is missing (the message names the apt-get command
// that installs them), and fails it when CI=true: CI must have them.
func RequireNix(t *testing.T) {
	t.Helper()
	Aarch64.Require(t)
}

// Require is RequireNix for tg: it needs tg's compiler and emulator.
func (tg Target) Require(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testenv.SkipOrFail(t, "the Nix e2e tests need an x86_64 Linux machine, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	var missing []string
	for _, tool := range []string{"nix", "nix-daemon", "nix-build", "nix-instantiate", "nix-store", tg.Qemu, tg.CC} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		testenv.SkipOrFail(t, "missing %s; install with: apt-get install -y nix-bin qemu-user %s", strings.Join(missing, ", "), tg.Debs)
	}
}

// NixEnv returns the environment for running the nix CLI in tests: the
// process environment with NIX_CONFIG set as above and NIX_REMOTE=daemon, so
// that everything lands in the daemon's store (the one EnsureDaemon
// starts). Pass --store to a command to use another store.
func NixEnv() []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		// A qemu prefix in the caller's environment would let guest
		// programs find paths outside the store under test.
		if strings.HasPrefix(kv, "NIX_CONFIG=") || strings.HasPrefix(kv, "NIX_REMOTE=") || strings.HasPrefix(kv, "QEMU_LD_PREFIX=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NIX_CONFIG="+nixConfig, "NIX_REMOTE=daemon")
}

// nixCommand runs a nix CLI tool with NixEnv and returns its stdout; stderr
// goes into the error.
func nixCommand(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = NixEnv()
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.String(), nil
}

// daemonMu serialises starting nix-daemon between parallel tests of one
// test binary; the daemon itself is shared by every process on the machine.
var daemonMu sync.Mutex

// EnsureDaemon makes sure a nix-daemon answers on DaemonSocket, starting one
// if needed, and returns the socket path. A daemon it starts runs detached
// and outlives the test binary (later runs and other tools reuse it); its
// log is $TMPDIR/nix-daemon.log.
func EnsureDaemon(t *testing.T) string {
	t.Helper()
	RequireNix(t)
	ctx := testContext(t, time.Minute)
	daemonMu.Lock()
	defer daemonMu.Unlock()
	if daemonAnswers(ctx) {
		return DaemonSocket
	}
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "no nix-daemon answers on %s and only root can start one", DaemonSocket)
	}
	if err := exec.CommandContext(ctx, "getent", "group", "nixbld").Run(); err != nil {
		t.Fatalf("group nixbld is missing: Nix builds as root need the nixbld build users (Debian's nix-bin creates them; example/build.sh does too): %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(DaemonSocket), 0o755); err != nil {
		t.Fatalf("start nix-daemon: %v", err)
	}
	logPath := filepath.Join(os.TempDir(), "nix-daemon.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("start nix-daemon: %v", err)
	}
	defer logFile.Close()
	// Not CommandContext: the daemon must outlive this test. Its output
	// goes to a file, not a pipe, so that go test does not wait for it.
	cmd := exec.Command("nix-daemon")
	cmd.Env = daemonEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nix-daemon: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !daemonAnswers(ctx) {
		select {
		case err := <-exited:
			t.Fatalf("nix-daemon (pid %d) exited before answering: %v; see %s", pid, err, logPath)
		case <-ctx.Done():
			t.Fatalf("nix-daemon (pid %d) did not answer on %s: %v; see %s", pid, DaemonSocket, ctx.Err(), logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("started nix-daemon (pid %d, log %s)", pid, logPath)
	return DaemonSocket
}

// daemonEnv is NixEnv without NIX_REMOTE: a daemon whose own store is
// "daemon" would serve every request by connecting to itself, recursively,
// until the process table is full.
func daemonEnv() []string {
	env := NixEnv()
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NIX_REMOTE=") {
			out = append(out, kv)
		}
	}
	return out
}

// daemonAnswers reports whether a daemon completes a ping. A wedged daemon
// accepts connections but never replies, hence the short timeout.
func daemonAnswers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := nixCommand(ctx, "nix", "store", "ping", "--store", "daemon")
	return err == nil
}

// testContext is cancelled at the test's deadline or after limit, whichever
// comes first, so a hung nix or qemu fails the test instead of the run.
func testContext(t *testing.T, limit time.Duration) context.Context {
	deadline := time.Now().Add(limit)
	if d, ok := t.Deadline(); ok && d.Add(-5*time.Second).Before(deadline) {
		deadline = d.Add(-5 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// Output is one output of one package of the example set, on both sides.
type Output struct {
	Attr      string `json:"attr"`   // attribute in example/pkgs.nix, e.g. "libgreet"
	Output    string `json:"output"` // output name, e.g. "lib"
	Native    string `json:"native"` // native aarch64 out path (instantiated, not built)
	Cross     string `json:"cross"`  // cross-built out path (built, in the daemon's store)
	NativeDrv string `json:"nativeDrv"`
	CrossDrv  string `json:"crossDrv"`
}

// Key is how Example.Outputs names o: the attribute for "out", else
// "attr.output" ("hello", "libgreet.lib").
func (o Output) Key() string {
	if o.Output == "out" {
		return o.Attr
	}
	return o.Attr + "." + o.Output
}

// Example is what BuildExample built.
type Example struct {
	Target      Target
	Dir         string            // the build directory (mapping.json, paths.json, gcroots/)
	MappingFile string            // mapping.json: every output whose native and cross paths differ
	Outputs     map[string]Output // by Output.Key
}

// Main is the key of the package the README demo serves; its closure is
// the whole runnable example.
const Main = "hello-wrapper"

// Get returns the output named key ("hello", "libgreet.lib"), failing the
// test when there is none, so that a renamed package is a clear failure.
func (e Example) Get(t *testing.T, key string) Output {
	t.Helper()
	o, ok := e.Outputs[key]
	if !ok {
		keys := make([]string, 0, len(e.Outputs))
		for k := range e.Outputs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Fatalf("example has no output %q; it has %s", key, strings.Join(keys, ", "))
	}
	return o
}

// BuildExample builds the cross side of example/pkgs.nix into the daemon's
// store and instantiates the native side, by running example/build.sh with
// dir as its output directory (GC roots live there). It returns the
// mapping file and every output's native and cross paths. It builds for
// Aarch64; Target.BuildExample builds for another target.
func BuildExample(t *testing.T, dir string) Example {
	t.Helper()
	return Aarch64.BuildExample(t, dir)
}

// BuildExample is BuildExample for tg. Nix keeps what was built, so a
// second call for the same target only evaluates and checks.
func (tg Target) BuildExample(t *testing.T, dir string) Example {
	t.Helper()
	EnsureDaemon(t)
	tg.Require(t)
	script, err := filepath.Abs(filepath.Join("..", "example", "build.sh"))
	if err != nil {
		t.Fatalf("build example: %v", err)
	}
	ctx := testContext(t, 2*time.Minute)
	start := time.Now()
	if _, err := nixCommand(ctx, script, dir, tg.Name); err != nil {
		t.Fatalf("build example for %s: %v", tg.Name, err)
	}
	t.Logf("example/build.sh %s took %v", tg.Name, time.Since(start).Round(time.Millisecond))

	raw, err := os.ReadFile(filepath.Join(dir, "paths.json"))
	if err != nil {
		t.Fatalf("build example: %v", err)
	}
	var outs []Output
	if err := json.Unmarshal(raw, &outs); err != nil {
		t.Fatalf("build example: parse %s: %v", filepath.Join(dir, "paths.json"), err)
	}
	ex := Example{Target: tg, Dir: dir, MappingFile: filepath.Join(dir, "mapping.json"), Outputs: make(map[string]Output, len(outs))}
	for _, o := range outs {
		ex.Outputs[o.Key()] = o
	}
	return ex
}

// Closure returns the closure of paths in the daemon's store, sorted.
func Closure(t *testing.T, paths ...string) []string {
	t.Helper()
	out, err := nixCommand(testContext(t, time.Minute), "nix-store", append([]string{"--query", "--requisites"}, paths...)...)
	if err != nil {
		t.Fatalf("closure of %s: %v", strings.Join(paths, " "), err)
	}
	closure := strings.Fields(out)
	sort.Strings(closure)
	return closure
}

// CopyClosure copies the closure of paths from /nix/store into storeDir
// (storeDir/<hash>-<name>), the layout RunInStore mounts on /nix/store. The
// copies keep the store's read-only modes; a cleanup makes them writable
// again so that t.TempDir can remove them.
func CopyClosure(t *testing.T, storeDir string, paths ...string) {
	t.Helper()
	closure := Closure(t, paths...)
	t.Cleanup(func() { makeWritable(t, storeDir) })
	ctx := testContext(t, time.Minute)
	if out, err := exec.CommandContext(ctx, "cp", append(append([]string{"-a", "--"}, closure...), storeDir)...).CombinedOutput(); err != nil {
		t.Fatalf("copy closure into %s: %v\n%s", storeDir, err, out)
	}
}

func makeWritable(t *testing.T, dir string) {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("make %s writable for cleanup: %v", dir, err)
	}
}

// RunInStore runs the aarch64 program argv under qemu-aarch64 with storeDir
// mounted on /nix/store, in a private mount namespace (unshare --mount,
// then mount --rbind). The program sees only what is in storeDir: unlike
// qemu-aarch64 -L, nothing falls back to the machine's real /nix/store, so
// a missing path is a failure. argv[0] must be an ELF program (a script's
// interpreter would run on the host). Needs root; returns stdout, and an
// error carrying stderr when the program fails. Target.RunInStore runs
// another target's programs.
func RunInStore(t *testing.T, storeDir string, argv ...string) (stdout string, err error) {
	t.Helper()
	return Aarch64.RunInStore(t, storeDir, argv...)
}

// RunInStore is RunInStore for a program of tg, run under tg.Qemu.
func (tg Target) RunInStore(t *testing.T, storeDir string, argv ...string) (stdout string, err error) {
	t.Helper()
	tg.Require(t)
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "RunInStore mounts over /nix/store in a private namespace, which needs root")
	}
	if len(argv) == 0 {
		return "", errors.New("run in store: no program given")
	}
	abs, err := filepath.Abs(storeDir)
	if err != nil {
		return "", fmt.Errorf("run %s in store %s: %w", argv[0], storeDir, err)
	}
	// The mount point has to exist; a fresh machine gets it from the daemon.
	if fi, err := os.Stat("/nix/store"); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("run %s in store %s: /nix/store is not a directory to mount on (start nix-daemon first): %v", argv[0], storeDir, err)
	}
	const script = `mount --rbind -- "$0" /nix/store && exec "$@"`
	args := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, abs, tg.Qemu}, argv...)
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(testContext(t, time.Minute), "unshare", args...)
	cmd.Env = NixEnv()
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("run %s in store %s: %w\nstderr: %s", argv[0], storeDir, err, errOut.Bytes())
	}
	return out.String(), nil
}

// readDrv parses the .drv file at path.
func readDrv(t *testing.T, path string) *derivation.Derivation {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read derivation: %v", err)
	}
	defer f.Close()
	drv, err := derivation.ReadDerivation(f)
	if err != nil {
		t.Fatalf("read derivation %s: %v", path, err)
	}
	return drv
}

// checkGolden compares got with testdata/name, or rewrites the file under
// -update-run-output.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateRunOutput {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./e2e -run %s -update-run-output)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s\ngot:\n%s\nwant:\n%s\nif the example changed on purpose, regenerate with: go test ./e2e -run %s -update-run-output", path, got, want, t.Name())
	}
}

// The example's cross programs are real aarch64 code: qemu-aarch64 runs
// them from the real store, where their interpreter, libraries and data are.
func TestExampleCrossBuildRuns(t *testing.T) {
	ex := BuildExample(t, t.TempDir())
	ctx := testContext(t, time.Minute)
	tests := []struct {
		key, program, golden string
	}{
		{"hello", "bin/hello", "hello.stdout"},
		{"hello", "bin/hi", "hello.stdout"},
		{"hello-compat", "bin/hello-compat", "hello-compat.stdout"},
	}
	for _, tc := range tests {
		t.Run(tc.key+"/"+tc.program, func(t *testing.T) {
			prog := filepath.Join(ex.Get(t, tc.key).Cross, tc.program)
			f, err := elf.Open(prog)
			if err != nil {
				t.Fatal(err)
			}
			machine := f.Machine
			f.Close()
			if machine != elf.EM_AARCH64 {
				t.Fatalf("%s is %v, want EM_AARCH64", prog, machine)
			}
			cmd := exec.CommandContext(ctx, "qemu-aarch64", prog)
			cmd.Env = NixEnv()
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("qemu-aarch64 %s: %v", prog, err)
			}
			checkGolden(t, tc.golden, string(out))
		})
	}
}

// The native side is an aarch64-linux package set whose out paths are known
// from its .drv files alone, under native names.
func TestNativeOutPathsKnown(t *testing.T) {
	ex := BuildExample(t, t.TempDir())
	const suffix = "aarch64-unknown-linux-gnu"
	// Packages compiled for the host carry the suffix when cross-built;
	// data, scripts, build-platform tools and fixed-output sources do not.
	wantSuffix := map[string]bool{
		"glibc": true, "libbase_1_0": true, "libbase_2_0": true, "libgreet": true,
		"hello": true, "hello-compat": true,
		"greet-data": false, "hello-wrapper": false, "bash": false, "leaky": false, "hello-src": false,
	}
	seen := map[string]bool{}
	for key, o := range ex.Outputs {
		t.Run(key, func(t *testing.T) {
			want, ok := wantSuffix[o.Attr]
			if !ok {
				t.Fatalf("attribute %s is new: say here whether it gets the host suffix", o.Attr)
			}
			seen[o.Attr] = true
			native := readDrv(t, o.NativeDrv)
			if native.Platform != "aarch64-linux" {
				t.Errorf("native %s: system = %q, want aarch64-linux", o.NativeDrv, native.Platform)
			}
			if got := native.Outputs[o.Output]; got == nil || got.Path != o.Native {
				t.Errorf("native %s: output %s = %+v, want path %s", o.NativeDrv, o.Output, got, o.Native)
			}
			if strings.Contains(o.Native, suffix) {
				t.Errorf("native path %s has the host suffix", o.Native)
			}

			cross := readDrv(t, o.CrossDrv)
			if cross.Platform != "x86_64-linux" {
				t.Errorf("cross %s: system = %q, want x86_64-linux", o.CrossDrv, cross.Platform)
			}
			if got := cross.Outputs[o.Output]; got == nil || got.Path != o.Cross {
				t.Errorf("cross %s: output %s = %+v, want path %s", o.CrossDrv, o.Output, got, o.Cross)
			}
			if got := strings.Contains(o.Cross, suffix); got != want {
				t.Errorf("cross path %s: has host suffix = %v, want %v", o.Cross, got, want)
			}
			if o.Attr == "hello-src" {
				if o.Native != o.Cross {
					t.Errorf("fixed-output source differs between sides: %s vs %s", o.Native, o.Cross)
				}
			} else if o.Native == o.Cross {
				t.Errorf("%s has the same out path %s on both sides", key, o.Native)
			}
		})
	}
	for attr := range wantSuffix {
		if !seen[attr] {
			t.Errorf("attribute %s is missing from the example", attr)
		}
	}

	// Naming as nixpkgs does it: suffix after pname, or after name when
	// only name is set.
	for key, wantName := range map[string]string{
		"hello":        "hello-" + suffix + "-2.12",
		"hello-compat": "hello-compat-1.0-" + suffix,
		"libgreet.lib": "libgreet-" + suffix + "-0.3-lib",
	} {
		if got := ex.Get(t, key).Cross; !strings.HasSuffix(got, "-"+wantName) {
			t.Errorf("cross %s = %s, want name %s", key, got, wantName)
		}
	}
}

func TestRunInStore(t *testing.T) {
	ex := BuildExample(t, t.TempDir())
	hello := ex.Get(t, "hello").Cross
	tests := []struct {
		name    string
		remove  string // key of an output left out of the copied store
		program string
		golden  string // expected stdout when it runs
		wantErr string // expected in the error when it does not
	}{
		{name: "complete closure", program: "bin/hello", golden: "hello.stdout"},
		{name: "through relative symlink", program: "bin/hi", golden: "hello.stdout"},
		{name: "no interpreter", remove: "glibc", program: "bin/hello", wantErr: "ld-linux-aarch64.so.1"},
		{name: "no indirect library", remove: "libbase_2_0", program: "bin/hello", wantErr: "libbase.so.2"},
		{name: "no data file", remove: "greet-data", program: "bin/hello", wantErr: "cannot read its greeting"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := t.TempDir()
			CopyClosure(t, store, hello)
			if tc.remove != "" {
				gone := filepath.Join(store, filepath.Base(ex.Get(t, tc.remove).Cross))
				makeWritable(t, store)
				if err := os.RemoveAll(gone); err != nil {
					t.Fatal(err)
				}
			}
			out, err := RunInStore(t, store, filepath.Join(hello, tc.program))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkGolden(t, tc.golden, out)
				return
			}
			if err == nil {
				t.Fatalf("ran without %s in the store (did it fall back to the real /nix/store?); stdout:\n%s", tc.remove, out)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not mention %q: %v", tc.wantErr, err)
			}
			t.Logf("failed as it should: %v", err)
		})
	}

	t.Run("no program", func(t *testing.T) {
		if _, err := RunInStore(t, t.TempDir()); err == nil {
			t.Fatal("RunInStore with no program succeeded")
		}
	})
}
