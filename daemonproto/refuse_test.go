package daemonproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// dirNAR is a NAR of a directory with an executable file and a symlink.
func dirNAR() []byte {
	return (&enc{}).str("nix-archive-1", "(", "type", "directory",
		"entry", "(", "name", "a", "node", "(", "type", "regular", "executable", "", "contents", "#!/bin/sh\n", ")", ")",
		"entry", "(", "name", "b", "node", "(", "type", "symlink", "target", "a", ")", ")",
		")").Bytes()
}

// pathInfoFields is a ValidPathInfo without its path, as uploads send it.
func pathInfoFields(e *enc, narSize uint64) *enc {
	return e.str("", strings.Repeat("0", 64)).strs().u64(0, narSize, 0).strs("k:sig").str("")
}

// TestRefusals sends every write op, in each of its layouts, and checks the
// server refuses it once and stays in sync for the next request.
func TestRefusals(t *testing.T) {
	nar := greetingNAR
	tests := []struct {
		name string
		m    uint64
		op   string
		req  *enc
	}{
		{"AddToStore at 1.25", 25, "AddToStore",
			hello(25).u64(opAddToStore).str("x", "fixed:r:sha256").strs(greetingPath).u64(0).frames(nar[:40], nar[40:])},
		{"AddToStore at 1.24, file", 24, "AddToStore",
			hello(24).u64(opAddToStore).str("x").u64(0, 1).str("sha256").write(nar)},
		{"AddToStore at 1.21, directory", 21, "AddToStore",
			hello(21).u64(opAddToStore).str("x").u64(0, 1).str("sha256").write(dirNAR())},
		{"AddTextToStore", 34, "AddTextToStore",
			hello(34).u64(opAddTextToStore).str("x.drv", strings.Repeat("Derive()", 1000)).strs(greetingPath)},
		{"AddToStoreNar at 1.34", 34, "AddToStoreNar",
			pathInfoFields(hello(34).u64(opAddToStoreNar).str(greetingPath), 128).u64(0, 0).frames(nar)},
		{"AddToStoreNar at 1.21", 21, "AddToStoreNar",
			pathInfoFields(hello(21).u64(opAddToStoreNar).str(greetingPath), 128).u64(0, 0)},
		{"AddToStoreNar at 1.20", 20, "AddToStoreNar",
			pathInfoFields(hello(20).u64(opAddToStoreNar).str(greetingPath), 128).u64(0, 0).write(dirNAR())},
		{"AddMultipleToStore", 34, "AddMultipleToStore",
			hello(34).u64(opAddMultipleToStore, 0, 0).frames(
				pathInfoFields((&enc{}).u64(1).str(greetingPath), 128).write(nar).Bytes())},
		{"AddMultipleToStore count 0 and junk", 34, "AddMultipleToStore",
			hello(34).u64(opAddMultipleToStore, 0, 0).frames(make([]byte, 9))},
		{"BuildDerivation", 34, "BuildDerivation",
			hello(34).u64(opBuildDerivation).str(helloPath+".drv").
				u64(1).str("out", helloPath, "", "").
				strs(greetingPath).str("x86_64-linux", "/bin/sh").strs("-c", "true").
				u64(2).str("out", helloPath, "big", strings.Repeat("v", 5000)).u64(0)},
		{"AddSignatures", 34, "AddSignatures", hello(34).u64(opAddSignatures).str(greetingPath).strs("k:sig")},
		{"CollectGarbage", 34, "CollectGarbage",
			hello(34).u64(opCollectGarbage, 3).strs(greetingPath).u64(0, 0, 0, 0, 0)},
		{"AddBuildLog", 34, "AddBuildLog",
			hello(34).u64(opAddBuildLog).str("aarb5i4jlyyz9jxxq5x7hndnn7hbjbnd-hello.drv").frames([]byte("log line\n"))},
		{"RegisterDrvOutput at 1.30", 30, "RegisterDrvOutput",
			hello(30).u64(opRegisterDrvOutput).str("sha256:00!out", helloPath)},
		{"RegisterDrvOutput at 1.31", 31, "RegisterDrvOutput",
			hello(31).u64(opRegisterDrvOutput).str(`{"id":"sha256:00!out"}`)},
		{"AddPermRoot at 1.36", 36, "AddPermRoot",
			hello(36).u64(opAddPermRoot).str(greetingPath, "/home/u/result")},
		{"VerifyStore", 34, "VerifyStore", hello(34).u64(opVerifyStore, 1, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.req.u64(opIsValidPath).str(greetingPath)
			out, err := serve(fixtureStore(), in.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "refuse-"+strings.NewReplacer(" ", "-", ",", "", ".", "_").Replace(tt.name), out,
				"go test ./daemonproto -run 'TestRefusals' -update")
			d := &dec{t: t, b: out}
			d.handshake(tt.m)
			if msg, want := d.errorMsg(tt.m), "decross-store is a read-only store: "+tt.op+" refused"; msg != want {
				t.Errorf("message %q, want %q", msg, want)
			}
			d.expect("stderr", stderrLast)
			d.expect("valid", 1)
			d.end()
		})
	}
}

func (e *enc) write(b []byte) *enc {
	e.Write(b)
	return e
}

// TestMalformed checks that input the server cannot parse gets one clear
// error and ends the connection, without reading further.
func TestMalformed(t *testing.T) {
	tests := []struct {
		name string
		m    uint64
		req  *enc
		want string
	}{
		{"unknown op", 34, hello(34).u64(99), "invalid operation 99"},
		{"removed op", 34, hello(34).u64(16).str(greetingPath), "invalid operation 16"},
		{"AddPermRoot before 1.36", 35, hello(35).u64(opAddPermRoot).str(greetingPath, "/r"), "invalid operation 47"},
		{"path outside the store", 34, hello(34).u64(opQueryPathInfo).str("/tmp/foo"), `"/tmp/foo" is not a store path`},
		{"bad hash in path", 34, hello(34).u64(opIsValidPath).str("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"), "is not a store path"},
		{"bad path in a list", 34, hello(34).u64(opQueryValidPaths).strs(greetingPath, "x").u64(0), `"x" is not a store path`},
		{"bad derived path", 34, hello(34).u64(opQueryMissing).strs(greetingPath + "!"), "names no outputs"},
		{"non-zero padding", 34, hello(34).u64(opIsValidPath).u64(49).write([]byte(missingPath + "1\x00\x00\x00\x00\x00\x00\x01")), "padding"},
		{"huge path", 34, hello(34).u64(opQueryPathInfo).u64(1 << 60), "exceeds the limit"},
		{"huge string", 34, hello(34).u64(opAddIndirectRoot).u64(1 << 30), "exceeds the limit"},
		{"huge text", 34, hello(34).u64(opAddTextToStore).str("x").u64(1 << 60), "exceeds the limit"},
		{"huge list", 34, hello(34).u64(opQueryValidPaths).u64(1 << 60), "exceeds the limit"},
		{"huge frame", 34, hello(34).u64(opAddMultipleToStore, 0, 0).u64(1 << 62), "exceeds the limit"},
		{"bad nar", 24, hello(24).u64(opAddToStore).str("x").u64(0, 1).str("sha256").str("nix-archive-1", "(", "type", "fifo"), "unknown node type"},
		{"bad nar magic", 24, hello(24).u64(opAddToStore).str("x").u64(0, 1).str("sha256").str("nix-archive-2"), "unexpected token"},
		{"bad error-free request", 34, hello(34).u64(opQueryPathFromHashPart).u64(1 << 20), "exceeds the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The IsValidPath after the bad request must go unanswered.
			in := tt.req.u64(opIsValidPath).str(greetingPath).Bytes()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			out, err := serve(fixtureStore(), in)
			runtime.ReadMemStats(&after)
			if !IsMalformed(err) {
				t.Errorf("ServeConn = %v, want a protocol error", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
				t.Errorf("rejecting the request allocated %d bytes", grew)
			}
			d := &dec{t: t, b: out}
			d.handshake(tt.m)
			if msg := d.errorMsg(tt.m); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q, want it to contain %q", msg, tt.want)
			}
			d.end()
		})
	}
}

// TestRequestBudgetCountsEntries: a long list of short paths is charged
// for its entries, not only for its string bytes, so the memory one
// request pins stays near MaxRequestBytes.
func TestRequestBudgetCountsEntries(t *testing.T) {
	const n = 1000
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("/nix/store/%032d-x", i)
	}
	for _, tt := range []struct {
		name string
		req  *enc
	}{
		{"store paths", hello(34).u64(opQueryValidPaths).strs(paths...).u64(0)},
		{"derived paths", hello(34).u64(opBuildPathsWithResults).strs(paths...).u64(0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Strings alone (44 bytes each) would fit the budget.
			srv := &Server{Store: fixtureStore(), MaxRequestBytes: 60 * n}
			var out bytes.Buffer
			err := srv.ServeConn(context.Background(), stdio{bytes.NewReader(tt.req.Bytes()), &out})
			if !IsMalformed(err) {
				t.Fatalf("ServeConn = %v, want the request refused", err)
			}
			d := &dec{t: t, b: out.Bytes()}
			d.handshake(34)
			if msg := d.errorMsg(34); !strings.Contains(msg, "request too large") {
				t.Errorf("message %q, want 'request too large'", msg)
			}
			d.end()
		})
	}
}

// TestTruncated checks that a client hanging up mid-request ends the
// connection with an I/O error and no reply.
func TestTruncated(t *testing.T) {
	full := hello(34).u64(opQueryValidPaths).strs(greetingPath, helloPath).u64(0).Bytes()
	start := len(hello(34).Bytes()) + 8
	for cut := start + 1; cut < len(full); cut += 5 {
		out, err := serve(fixtureStore(), full[:cut])
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: ServeConn = %v, want unexpected EOF", cut, err)
		}
		d := &dec{t: t, b: out}
		d.handshake(34)
		d.end()
	}
}
