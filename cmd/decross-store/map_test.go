package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decross-store/decross-store/mapping"
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

// TestWriteMappingKeepsSpecialFiles: -o /dev/null (or a pipe) is written
// in place; renaming the temporary file over it would replace the device
// with a regular file. A pipe stands in for /dev/null here.
func TestWriteMappingKeepsSpecialFiles(t *testing.T) {
	m, err := mapping.New([]mapping.Entry{{Native: "/nix/store/00000000000000000000000000000000-a-1", Cross: "/nix/store/11111111111111111111111111111111-a-aarch64-unknown-linux-gnu-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := m.Write(&want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := os.ReadFile(fifo)
		got <- b
	}()
	if err := writeMapping(m, fifo, io.Discard); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Errorf("pipe got %q, want %q", b, want.Bytes())
		}
	case <-time.After(10 * time.Second):
		t.Error("nothing was written to the pipe")
	}
	fi, err := os.Lstat(fifo)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeNamedPipe {
		t.Errorf("%s is now %v, want the named pipe it was", fifo, fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".mapping-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// A regular file is still replaced whole.
	file := filepath.Join(dir, "m.json")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeMapping(m, file, io.Discard); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, want.Bytes()) {
		t.Errorf("%s = %q, want %q", file, b, want.Bytes())
	}
	if err := writeMapping(m, dir, io.Discard); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("writing to a directory: %v", err)
	}

	// A descriptor of this process (a redirection such as >> log) is
	// written at its position; the file behind it is neither replaced nor
	// truncated.
	for _, name := range []string{"/proc/self/fd/%d", "/dev/fd/%d"} {
		logName := filepath.Join(dir, "log")
		logFile, err := os.OpenFile(logName, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := logFile.WriteString("earlier line\n"); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(logName)
		if err := writeMapping(m, fmt.Sprintf(name, logFile.Fd()), io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := logFile.WriteString("later line\n"); err != nil {
			t.Fatalf("the descriptor no longer works after writing the mapping through %s: %v", name, err)
		}
		logFile.Close()
		after, _ := os.Stat(logName)
		if !os.SameFile(before, after) {
			t.Errorf("%s: the file behind the descriptor was replaced", name)
		}
		if b, _ := os.ReadFile(logName); string(b) != "earlier line\n"+want.String()+"later line\n" {
			t.Errorf("%s: file behind the descriptor = %q", name, b)
		}
	}

	// An existing regular file under /dev (/dev/shm) is written in place,
	// and nothing of its old, longer content stays behind.
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		shm := filepath.Join("/dev/shm", fmt.Sprintf("decross-test-%d.json", os.Getpid()))
		t.Cleanup(func() { os.Remove(shm) })
		if err := os.WriteFile(shm, bytes.Repeat([]byte("x"), want.Len()+100), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := writeMapping(m, shm, io.Discard); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(shm); !bytes.Equal(b, want.Bytes()) {
			t.Errorf("%s = %q, want the mapping alone", shm, b)
		}
	}

	// Through a symlink the target is replaced and the link kept; an
	// existing file keeps its mode.
	target := filepath.Join(dir, "target.json")
	if err := os.WriteFile(target, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink("target.json", link); err != nil {
		t.Fatal(err)
	}
	if err := writeMapping(m, link, io.Discard); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != os.ModeSymlink {
		t.Errorf("%s is no longer a symlink: %v, %v", link, fi, err)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, want.Bytes()) {
		t.Errorf("%s = %q, want the mapping", target, b)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600 kept", target, fi, err)
	}
}
