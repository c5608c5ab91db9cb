package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
)

// TestServeStdioBehindOpenSSH runs decross-store serve --stdio as the
// forced command of a key in OpenSSH's sshd, the README's way of serving
// through a machine's own sshd: a stock ssh-ng client asks for
// `nix-daemon --stdio` and gets decross-store.
func TestServeStdioBehindOpenSSH(t *testing.T) {
	RequireNix(t)
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			testenv.SkipOrFail(t, "OpenSSH server missing; install with: apt-get install -y openssh-server")
		}
	}
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	bin := serverBinary(t)
	secret, public := filepath.Join(work, "secret.key"), filepath.Join(work, "public.key")
	run(t, bin, "keygen", "--name", "sshd-1", "--secret-key-file", secret, "--public-key-file", public)
	pub, err := os.ReadFile(public)
	if err != nil {
		t.Fatal(err)
	}
	clientKey := filepath.Join(work, "client_key")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey)
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	forced := strings.Join([]string{bin, "serve", "--stdio", "--mapping", mappingFile, "--signing-key", secret, "--cache-dir", filepath.Join(work, "cache")}, " ")
	authorized := filepath.Join(work, "authorized_keys")
	line := fmt.Sprintf("command=%q,restrict %s", forced, clientPub)
	if err := os.WriteFile(authorized, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}

	port := startSSHD(t, sshd, work, authorized)
	srv := &server{publicKey: string(pub), port: port, clientKey: clientKey}
	ctx := testContext(t, 2*time.Minute)
	hello := ex.Get(t, "hello")
	dest := filepath.Join(work, "dest")
	t.Cleanup(func() { makeWritable(t, dest) })
	if _, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", srv.url(clientKey), "--to", dest, hello.Native); err != nil {
		t.Fatal(err)
	}
	got, err := RunInStore(t, filepath.Join(dest, "nix", "store"), filepath.Join(hello.Native, "bin", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "hello.stdout", got)
}

// startSSHD runs sshd in the foreground on a free local port, with its own
// host key and authorized_keys file, until the test ends.
func startSSHD(t *testing.T, sshd, dir, authorizedKeys string) string {
	t.Helper()
	hostKey := filepath.Join(dir, "sshd_host_key")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	config := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(config, []byte(strings.Join([]string{
		"Port " + port,
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authorizedKeys,
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"StrictModes no",
		"UsePAM no",
		"PidFile none",
	}, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "sshd.log")
	cmd := exec.Command(sshd, "-D", "-f", config, "-E", logFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logFile)
			t.Logf("sshd log:\n%s", log)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("sshd did not listen on %s:\n%s", port, log)
		}
	}
}
