package daemonproto

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/pathinfo"
)

const unservedPath = "/nix/store/00000000000000000000000000000009-leaky-1.0"

// notServedStore reports every path as not valid, with a reason.
type notServedStore struct{ *memStore }

func (notServedStore) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	return nil, fmt.Errorf("path '%s' is not valid in this store: it references an x86_64 bash: %w", p, ErrInvalidPath)
}

func (s notServedStore) NarFromPath(ctx context.Context, p string) (io.ReadCloser, error) {
	_, err := s.QueryPathInfo(ctx, p)
	return nil, err
}

// TestInvalidPathErrorsAreAbsence checks that a store's "not valid, because"
// answers validity questions with "no" and keeps the reason where a
// message goes, on the same connection.
func TestInvalidPathErrorsAreAbsence(t *testing.T) {
	in := hello(34).
		u64(opIsValidPath).str(unservedPath).
		u64(opQueryValidPaths).strs(unservedPath).u64(0).
		u64(opQueryMissing).strs(unservedPath).
		u64(opBuildPathsWithResults).strs(unservedPath).u64(0).
		u64(opQueryPathInfo).str(unservedPath).
		u64(opIsValidPath).str(unservedPath)
	out, err := serve(notServedStore{&memStore{}}, in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	d := &dec{t: t, b: out}
	d.handshake(34)

	d.expect("IsValidPath", stderrLast)
	d.expect("valid", 0)

	d.expect("QueryValidPaths", stderrLast)
	d.expect("valid paths", 0)

	d.expect("QueryMissing", stderrLast)
	d.expect("willBuild", 0)
	d.expect("willSubstitute", 0)
	d.expect("unknown", 1)
	if got := d.str(); got != unservedPath {
		t.Fatalf("unknown = %q", got)
	}
	d.expect("downloadSize", 0)
	d.expect("narSize", 0)

	d.expect("BuildPathsWithResults", stderrLast)
	d.expect("results", 1)
	if got := d.str(); got != unservedPath {
		t.Fatalf("result for %q", got)
	}
	d.expect("status NoSubstituters", buildStatusNoSubstituters)
	if msg := d.str(); !strings.Contains(msg, "x86_64 bash") {
		t.Fatalf("build result message %q lacks the store's reason", msg)
	}
	for i := 0; i < 4; i++ {
		d.u64() // timesBuilt, isNonDeterministic, startTime, stopTime
	}
	d.expect("builtOutputs", 0)

	if msg := d.errorMsg(34); !strings.Contains(msg, "is not valid") || !strings.Contains(msg, "x86_64 bash") {
		t.Fatalf("QueryPathInfo error %q: want the store's reason with 'is not valid'", msg)
	}

	d.expect("IsValidPath after the error", stderrLast)
	d.expect("valid", 0)
	d.end()
}
