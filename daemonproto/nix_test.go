package daemonproto

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
	"github.com/decross-store/decross-store/pathinfo"
)

// serveEnv makes the test binary act as a server on stdin/stdout, serving
// the memStore fixture named by the variable. Nix starts it as the
// remote-program of an ssh-ng://localhost store.
const serveEnv = "DECROSS_DAEMONPROTO_TEST_SERVE"

func TestMain(m *testing.M) {
	if f := os.Getenv(serveEnv); f != "" {
		os.Exit(serveStdio(f))
	}
	os.Exit(m.Run())
}

type stdio struct {
	io.Reader
	io.Writer
}

func serveStdio(fixture string) int {
	st, err := loadMemStore(fixture)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load fixture:", err)
		return 1
	}
	srv := &Server{Store: st, NixVersion: "decross-store 0.1"}
	if err := srv.ServeConn(context.Background(), stdio{os.Stdin, os.Stdout}); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

const nixConfig = "experimental-features = nix-command\nsandbox = false\nsubstituters =\n"

func requireNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store", "nix-daemon"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "%s not installed: %v", tool, err)
		}
	}
}

// nixCmd runs a Nix command with a bounded run time and returns stdout.
func nixCmd(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG="+nixConfig)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func mustNix(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, stderr, err := nixCmd(t, env, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// nixPathInfoJSON is the subset of `nix path-info --json` compared here.
type nixPathInfoJSON struct {
	Path             string   `json:"path"`
	Valid            *bool    `json:"valid,omitempty"`
	NarHash          string   `json:"narHash"`
	NarSize          uint64   `json:"narSize"`
	References       []string `json:"references"`
	CA               string   `json:"ca"`
	Deriver          string   `json:"deriver"`
	RegistrationTime int64    `json:"registrationTime"`
	Ultimate         bool     `json:"ultimate"`
	Signatures       []string `json:"signatures"`
}

func pathInfoJSON(t *testing.T, env []string, args ...string) nixPathInfoJSON {
	t.Helper()
	out := mustNix(t, env, append([]string{"nix", "path-info", "--json"}, args...)...)
	var infos []nixPathInfoJSON
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("nix path-info output %q: %v", out, err)
	}
	return infos[0]
}

// toPathInfo converts nix's JSON (SRI narHash) to a PathInfo.
func (j nixPathInfoJSON) toPathInfo(t *testing.T) pathinfo.PathInfo {
	t.Helper()
	b64, ok := strings.CutPrefix(j.NarHash, "sha256-")
	if !ok {
		t.Fatalf("unexpected narHash %q", j.NarHash)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 32 {
		t.Fatalf("decode narHash %q: %v", j.NarHash, err)
	}
	info := pathinfo.PathInfo{
		Path: j.Path, Deriver: j.Deriver, NarSize: j.NarSize, References: j.References,
		RegistrationTime: j.RegistrationTime, Ultimate: j.Ultimate, Sigs: j.Signatures, CA: j.CA,
	}
	copy(info.NarHash[:], raw)
	return info
}

// addToNixStore puts a file with the given content into the machine's Nix
// store and returns its path.
func addToNixStore(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(mustNix(t, nil, "nix-store", "--add", f))
}

// TestRealNixClient drives the server with the Nix 2.8 command-line client
// over ssh-ng://localhost, which Nix runs without ssh.
func TestRealNixClient(t *testing.T) {
	requireNix(t)
	served := addToNixStore(t, "decross-served.txt", "served by the daemonproto test\n")
	absent := addToNixStore(t, "decross-absent.txt", "not in the test store\n")
	local := pathInfoJSON(t, nil, served)
	nar := mustNix(t, nil, "nix-store", "--dump", served)

	st := &memStore{}
	st.add(local.toPathInfo(t), []byte(nar))
	fixture := filepath.Join(t.TempDir(), "store.json")
	if err := st.save(fixture); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{serveEnv + "=" + fixture}
	store := "ssh-ng://localhost?remote-program=" + exe

	t.Run("ping", func(t *testing.T) {
		// nix store ping prints its report on stderr.
		out, stderr, err := nixCmd(t, env, "nix", "store", "ping", "--store", store)
		if err != nil || !strings.Contains(out+stderr, "Version: decross-store 0.1") {
			t.Errorf("nix store ping: %v, output lacks the version:\n%s%s", err, out, stderr)
		}
	})
	t.Run("path-info valid", func(t *testing.T) {
		remote := pathInfoJSON(t, env, "--store", store, served)
		if !reflect.DeepEqual(remote, local) {
			t.Errorf("path info through the server\n%+v\nwant\n%+v", remote, local)
		}
	})
	t.Run("path-info missing", func(t *testing.T) {
		remote := pathInfoJSON(t, env, "--store", store, absent)
		if remote.Valid == nil || *remote.Valid {
			t.Errorf("missing path reported as %+v, want valid=false", remote)
		}
	})
	t.Run("store cat", func(t *testing.T) {
		out := mustNix(t, env, "nix", "store", "cat", "--store", store, served)
		if out != "served by the daemonproto test\n" {
			t.Errorf("nix store cat = %q", out)
		}
	})
	t.Run("copy from", func(t *testing.T) {
		dest := t.TempDir()
		mustNix(t, env, "nix", "copy", "--no-check-sigs", "--from", store, "--to", dest, served)
		got, err := os.ReadFile(filepath.Join(dest, served))
		if err != nil || string(got) != "served by the daemonproto test\n" {
			t.Errorf("copied file = %q, %v", got, err)
		}
	})
	t.Run("copy to, already present", func(t *testing.T) {
		mustNix(t, env, "nix", "copy", "--to", store, served)
	})
	t.Run("copy to, refused", func(t *testing.T) {
		_, stderr, err := nixCmd(t, env, "nix", "copy", "--to", store, absent)
		if err == nil || !strings.Contains(stderr, "decross-store is a read-only store: AddMultipleToStore refused") {
			t.Errorf("nix copy --to a read-only store: err %v, stderr:\n%s", err, stderr)
		}
	})
}
