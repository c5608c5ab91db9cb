package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/mapping"
	"github.com/decross-store/decross-store/pathinfo"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// serverBinary builds cmd/decross-store once per test binary.
func serverBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "decross-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "decross-store")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/decross-store").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// server is a running `decross-store serve` and what a client needs to use it.
type server struct {
	cmd       *exec.Cmd
	addr      string // 127.0.0.1:port
	port      string
	clientKey string // ssh private key accepted by the server
	publicKey string // Nix public signing key
	dir       string
	logMu     sync.Mutex
	log       bytes.Buffer
	exited    chan error    // the server's exit, for a test that waits for it
	done      chan struct{} // closed once the server has exited
}

func (s *server) logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(testContext(t, time.Minute), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var serverCount atomic.Int64

// startServer runs the real server binary with mappingFile on a free port;
// extra flags come last, so they override the defaults here.
func startServer(t *testing.T, mappingFile string, extra ...string) *server {
	t.Helper()
	bin := serverBinary(t)
	dir := t.TempDir()
	s := &server{dir: dir, clientKey: filepath.Join(dir, "client_key"), exited: make(chan error, 1), done: make(chan struct{})}
	// Nix keys trusted-public-keys by name: each server needs its own.
	name := fmt.Sprintf("decross-e2e-%d", serverCount.Add(1))
	run(t, bin, "keygen", "--name", name, "--secret-key-file", filepath.Join(dir, "secret.key"), "--public-key-file", filepath.Join(dir, "public.key"))
	pub, err := os.ReadFile(filepath.Join(dir, "public.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.publicKey = string(pub)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", s.clientKey)
	authorized, err := os.ReadFile(s.clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), authorized, 0o600); err != nil {
		t.Fatal(err)
	}

	s.cmd = exec.Command(bin, "serve",
		"--listen", "127.0.0.1:0",
		"--host-key", filepath.Join(dir, "state", "ssh_host_ed25519_key"),
		"--authorized-keys", filepath.Join(dir, "authorized_keys"),
		"--mapping", mappingFile,
		"--signing-key", filepath.Join(dir, "secret.key"),
		"--upstream", "daemon",
		"--cache-dir", filepath.Join(dir, "state", "cache"))
	s.cmd.Args = append(s.cmd.Args, extra...)
	s.cmd.Env = NixEnv()
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg=serving listen=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if m := re.FindStringSubmatch(line); m != nil {
				listening <- m[1]
			}
		}
		s.exited <- s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		// Its state directory is removed next: nothing may still write there.
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Errorf("server did not exit after SIGKILL")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs())
		}
	})
	select {
	case s.addr = <-listening:
	case err := <-s.exited:
		t.Fatalf("server exited before listening: %v\n%s", err, s.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start listening\n%s", s.logs())
	}
	s.port = s.addr[strings.LastIndex(s.addr, ":")+1:]
	return s
}

func (s *server) url(key string) string {
	return "ssh-ng://root@127.0.0.1?ssh-key=" + key
}

// nix runs a nix CLI command against the server with its signing key
// trusted; extraConfig lines are appended to NIX_CONFIG.
func (s *server) nix(ctx context.Context, extraConfig string, name string, args ...string) (string, string, error) {
	env := NixEnv()
	for i, kv := range env {
		if strings.HasPrefix(kv, "NIX_CONFIG=") {
			env[i] = kv + "\ntrusted-public-keys = " + s.publicKey + "\n" + extraConfig
		}
	}
	env = append(env, "NIX_SSHOPTS=-p "+s.port+" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// servableMapping writes ex's mapping without the build-platform bash:
// mapping an x86_64 bash to the native aarch64 one would serve the wrong
// bytes, so anything that references it must be refused instead.
func servableMapping(t *testing.T, ex Example, dir string) (string, *mapping.Mapping) {
	t.Helper()
	m, err := mapping.New(without(loadMapping(t, ex.MappingFile), ex.Get(t, "bash").Native))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mapping.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path, m
}

type jsonPathInfo struct {
	Path             string   `json:"path"`
	NarHash          string   `json:"narHash"`
	NarSize          uint64   `json:"narSize"`
	References       []string `json:"references"`
	Signatures       []string `json:"signatures"`
	Deriver          string   `json:"deriver"`
	CA               string   `json:"ca"`
	Ultimate         bool     `json:"ultimate"`
	RegistrationTime int64    `json:"registrationTime"`
}

func pathInfoJSON(t *testing.T, out string) []jsonPathInfo {
	t.Helper()
	var infos []jsonPathInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("parse nix path-info --json: %v\n%s", err, out)
	}
	return infos
}

// crossHashes lists the hash parts of every cross path in m.
func crossHashes(m *mapping.Mapping) []string {
	var hs []string
	for _, e := range m.Entries() {
		hs = append(hs, e.Cross[len("/nix/store/"):][:32])
	}
	return hs
}

func TestServeOverSSH(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, m := servableMapping(t, ex, work)
	srv := startServer(t, mappingFile)
	url := srv.url(srv.clientKey)
	ctx := testContext(t, 5*time.Minute)

	hello := ex.Get(t, "hello")
	main := ex.Get(t, Main)

	t.Run("path-info", func(t *testing.T) {
		out, _, err := srv.nix(ctx, "", "nix", "path-info", "--json", "--store", url, hello.Native)
		if err != nil {
			t.Fatal(err)
		}
		infos := pathInfoJSON(t, out)
		if len(infos) != 1 || infos[0].Path != hello.Native {
			t.Fatalf("path-info = %+v", infos)
		}
		info := infos[0]
		// References: the cross references, each mapped to its native path.
		crossRefs, err := nixCommand(ctx, "nix-store", "--query", "--references", hello.Cross)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, r := range strings.Fields(crossRefs) {
			if e, ok := m.ByCross(r); ok {
				r = e.Native
			}
			want = append(want, r)
		}
		sort.Strings(want)
		sort.Strings(info.References)
		if fmt.Sprint(info.References) != fmt.Sprint(want) {
			t.Errorf("references = %v, want %v", info.References, want)
		}
		if !contains(info.References, hello.Native) {
			t.Errorf("self-reference missing from %v", info.References)
		}
		if info.Deriver != hello.NativeDrv {
			t.Errorf("deriver = %q, want %q", info.Deriver, hello.NativeDrv)
		}
		if info.CA != "" || info.Ultimate {
			t.Errorf("ca = %q, ultimate = %v; want neither", info.CA, info.Ultimate)
		}
		crossInfo, err := nixCommand(ctx, "nix", "path-info", "--json", hello.Cross)
		if err != nil {
			t.Fatal(err)
		}
		if ci := pathInfoJSON(t, crossInfo)[0]; ci.NarHash == info.NarHash {
			t.Errorf("native narHash equals the cross one (%s): nothing was rewritten", ci.NarHash)
		}
		pk, err := signature.ParsePublicKey(strings.TrimSpace(srv.publicKey))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Signatures) != 1 {
			t.Fatalf("signatures = %v, want one", info.Signatures)
		}
		sig, err := signature.ParseSignature(info.Signatures[0])
		if err != nil {
			t.Fatal(err)
		}
		narHash, err := pathinfo.ParseNarHash(info.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		// The fingerprint as Nix computes it, hash in nixbase32.
		fp := fmt.Sprintf("1;%s;%s;%d;%s", info.Path, narHash, info.NarSize, strings.Join(info.References, ","))
		if !pk.Verify(fp, sig) {
			t.Errorf("signature %s does not verify for %q", info.Signatures[0], fp)
		}

		// The cross path itself is not served.
		if _, stderr, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, hello.Cross); err == nil || !strings.Contains(stderr, "is not valid") {
			t.Errorf("path-info of the cross path: err %v, stderr %q; want 'is not valid'", err, stderr)
		}
	})

	// What a user browsing the store sees: the server's version, and the
	// rewritten files read through NarFromPath.
	t.Run("ping-ls-cat", func(t *testing.T) {
		// Nix 2.8 prints the ping result as a notice, on stderr.
		out, notice, err := srv.nix(ctx, "", "nix", "store", "ping", "--store", url)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out+notice, "Version: decross-store") {
			t.Errorf("nix store ping printed %q, want the server's version", out+notice)
		}
		out, _, err = srv.nix(ctx, "", "nix", "store", "ls", "--store", url, "-R", hello.Native)
		if err != nil {
			t.Fatal(err)
		}
		if fields := strings.Fields(out); !contains(fields, "./bin/hello") || !contains(fields, "./share/hello/message.txt") {
			t.Errorf("nix store ls -R = %q", out)
		}
		out, _, err = srv.nix(ctx, "", "nix", "store", "cat", "--store", url, hello.Native+"/share/hello/message.txt")
		if err != nil {
			t.Fatal(err)
		}
		if out != "Hello, world!\n" {
			t.Errorf("nix store cat = %q", out)
		}
	})

	dest := filepath.Join(work, "client-store")
	t.Cleanup(func() { makeWritable(t, dest) })
	t.Run("copy-verify-run", func(t *testing.T) {
		_, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, main.Native)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := srv.nix(ctx, "", "nix", "store", "verify", "--store", dest, "-r", main.Native); err != nil {
			t.Fatal(err)
		}
		storeDir := filepath.Join(dest, "nix", "store")
		for _, prog := range []struct{ key, bin string }{{"hello", "bin/hello"}, {"hello-compat", "bin/hello-compat"}} {
			o := ex.Get(t, prog.key)
			got, err := RunInStore(t, storeDir, filepath.Join(o.Native, prog.bin))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, prog.key+".stdout", got)
		}
		// The wrapper script's text names the native paths exactly.
		wrapper, err := os.ReadFile(filepath.Join(dest, main.Native, "bin", "hello-wrapper"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "exec " + hello.Native + "/bin/hello"; !strings.Contains(string(wrapper), want) {
			t.Errorf("hello-wrapper = %q, want it to contain %q", wrapper, want)
		}
		assertNoCrossHashes(t, storeDir, crossHashes(m))
	})

	t.Run("substitute", func(t *testing.T) {
		dest2 := filepath.Join(work, "substituted")
		t.Cleanup(func() { makeWritable(t, dest2) })
		_, stderr, err := srv.nix(ctx, "substituters = "+url+"\nrequire-sigs = true", "nix-store", "--store", dest2, "--realise", main.Native)
		if err != nil {
			t.Fatal(err)
		}
		if want := "copying path '" + hello.Native + "' from 'ssh-ng://"; !strings.Contains(stderr, want) {
			t.Errorf("stderr does not show %q:\n%s", want, stderr)
		}
		// An unservable path is a miss for the substituter, not a failure:
		// Nix goes on to the next substituter, and with none left says so.
		leaky := ex.Get(t, "leaky")
		_, stderr, err = srv.nix(ctx, "substituters = "+url+"\nrequire-sigs = true", "nix-store", "--store", dest2, "--realise", leaky.Native)
		if err == nil || !strings.Contains(stderr, "don't know how to build these paths") {
			t.Errorf("substituting the leaky path: err %v, want Nix's \"don't know how to build\":\n%s", err, stderr)
		}
		got, err := RunInStore(t, filepath.Join(dest2, "nix", "store"), filepath.Join(hello.Native, "bin", "hello"))
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, "hello.stdout", got)
	})

	t.Run("leak-refused", func(t *testing.T) {
		leaky := ex.Get(t, "leaky")
		bash := ex.Get(t, "bash")
		_, stderr, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, leaky.Native)
		if err == nil {
			t.Fatal("path-info of a path whose closure holds an x86_64 bash succeeded")
		}
		for _, want := range []string{leaky.Native, leaky.Cross, bash.Cross, "not in the mapping"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("error does not name %q:\n%s", want, stderr)
			}
		}
	})

	t.Run("write-refused", func(t *testing.T) {
		// Something the server does not have: the cross bash.
		_, stderr, err := srv.nix(ctx, "", "nix", "copy", "--to", url, ex.Get(t, "bash").Cross)
		if err == nil || !strings.Contains(stderr, "read-only") {
			t.Fatalf("nix copy --to: err %v, stderr %q; want a read-only refusal", err, stderr)
		}
		if _, _, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, hello.Native); err != nil {
			t.Fatalf("server stopped serving after a refused write: %v", err)
		}
	})

	t.Run("unknown-key-refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other_key")
		run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
		_, stderr, err := srv.nix(ctx, "", "nix", "path-info", "--store", srv.url(other), hello.Native)
		if err == nil {
			t.Fatal("an unknown SSH key was let in")
		}
		if !strings.Contains(stderr, "Permission denied (publickey)") {
			t.Errorf("stderr %q, want ssh's 'Permission denied (publickey)'", stderr)
		}
		if _, _, err := srv.nix(ctx, "", "nix", "path-info", "--store", url, hello.Native); err != nil {
			t.Fatalf("server stopped serving after refusing a key: %v", err)
		}
	})

	t.Run("graceful-shutdown", func(t *testing.T) {
		// An idle session, as a substituter keeps open between requests:
		// the handshake done, no request pending.
		ssh := exec.CommandContext(ctx, "ssh", "-p", srv.port, "-i", srv.clientKey, "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@127.0.0.1", "nix-daemon --stdio")
		stdin, _ := ssh.StdinPipe()
		stdout, _ := ssh.StdoutPipe()
		if err := ssh.Start(); err != nil {
			t.Fatal(err)
		}
		defer ssh.Process.Kill()
		hello := []byte{0x63, 0x78, 0x69, 0x6e, 0, 0, 0, 0}
		if _, err := stdin.Write(hello); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(stdout, make([]byte, 16)); err != nil {
			t.Fatalf("handshake over ssh: %v", err)
		}
		_, _ = stdin.Write([]byte{0x22, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		if _, err := io.ReadFull(stdout, make([]byte, 32)); err != nil { // nix version string, LAST
			t.Fatalf("handshake over ssh: %v", err)
		}

		start := time.Now()
		if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-srv.exited:
			if err != nil {
				t.Fatalf("server exited with %v after SIGTERM", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("server did not exit after SIGTERM (an idle session held it)")
		}
		t.Logf("server stopped %v after SIGTERM with an idle session open", time.Since(start).Round(time.Millisecond))
		// The session was ended cleanly: exit status 0, not a dropped connection.
		if err := ssh.Wait(); err != nil {
			t.Errorf("idle ssh session after the drain: %v", err)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// assertNoCrossHashes fails when any file, symlink or name under dir holds
// a cross hash part.
func assertNoCrossHashes(t *testing.T, dir string, hashes []string) {
	t.Helper()
	checked := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var data []byte
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			data = []byte(target)
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			data, err = io.ReadAll(f)
			f.Close()
			if err != nil {
				return err
			}
		}
		data = append(data, p...)
		for _, h := range hashes {
			if bytes.Contains(data, []byte(h)) {
				t.Errorf("%s holds the cross hash %s", p, h)
			}
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d entries checked under %s", checked, dir)
	}
}

// TestServeStdio runs the server as an ssh-ng remote-program: Nix 2.8 runs
// `<remote-program> --stdio` itself for host localhost (no sshd), which is
// how decross-store serve --stdio runs behind OpenSSH too.
func TestServeStdio(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	bin := serverBinary(t)
	run(t, bin, "keygen", "--name", "stdio-1", "--secret-key-file", filepath.Join(work, "secret.key"), "--public-key-file", filepath.Join(work, "public.key"))
	pub, err := os.ReadFile(filepath.Join(work, "public.key"))
	if err != nil {
		t.Fatal(err)
	}
	prog := strings.Join([]string{bin, "serve", "--mapping", mappingFile, "--signing-key", filepath.Join(work, "secret.key"), "--cache-dir", filepath.Join(work, "cache")}, " ")
	// remote-store= makes Nix append --store, as it would for nix-daemon.
	url := "ssh-ng://localhost?remote-store=daemon&remote-program=" + strings.ReplaceAll(prog, " ", "%20")
	dest := filepath.Join(work, "dest")
	t.Cleanup(func() { makeWritable(t, dest) })
	srv := &server{publicKey: string(pub)}
	ctx := testContext(t, 2*time.Minute)
	hello := ex.Get(t, "hello")
	_, stderr, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, hello.Native)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "level=INFO") {
		t.Errorf("--stdio logged at info level to the user's terminal:\n%s", stderr)
	}
	got, err := RunInStore(t, filepath.Join(dest, "nix", "store"), filepath.Join(hello.Native, "bin", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "hello.stdout", got)
}
