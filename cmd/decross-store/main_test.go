package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary's main as a child process:
// DECROSS_STORE_MAIN=1 and the command line after "--".
func TestMain(m *testing.M) {
	if os.Getenv("DECROSS_STORE_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"decross-store"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A command stuck where no context reaches (here, opening a FIFO that
// nothing writes) ends on the second Ctrl-C: the first asks it to stop
// cleanly, the second takes the default action.
func TestSecondInterruptKills(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pairs")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "map", "--pairs", fifo, "-o", filepath.Join(t.TempDir(), "m.json"))
	cmd.Env = append(os.Environ(), "DECROSS_STORE_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait until the child is blocked opening the FIFO: by then main has
	// installed its signal handling.
	waitInOpen(t, cmd.Process.Pid)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the first interrupt ended the command (%v); it should only have cancelled its context\n%s", err, stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != -1 {
			t.Errorf("after the second interrupt: %v, want death by signal", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the second interrupt did not end the command")
	}
}

// waitInOpen waits until a thread of process pid is blocked opening a
// FIFO that has no writer, as /proc/PID/task/TID/wchan shows
// ("wait_for_partner"); only main opens one, after installing its signal
// handling. Where wchan does not tell, the test is skipped.
func waitInOpen(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && string(b) == "wait_for_partner" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Skip("/proc/PID/task/*/wchan never showed the child blocked opening its FIFO")
}
