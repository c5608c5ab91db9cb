package rewrite

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/decross-store/decross-store/internal/nartest"
)

// storePath returns a syntactically valid store path whose hash part is
// derived from seed, so tests get stable, distinct paths.
func storePath(seed, name string) string {
	sum := sha256.Sum256([]byte(seed))
	return "/nix/store/" + nixbase32.EncodeToString(sum[:20]) + "-" + name
}

// The NAR builders come from internal/nartest, which encodes the format by
// hand, independently of the code under test and of go-nix.
type node = nartest.Node

var (
	reg   = nartest.Reg
	exe   = nartest.Exe
	sym   = nartest.Sym
	narOf = nartest.Encode
	ent   = nartest.E
	dir   = nartest.Dir
)

type entry = nartest.Entry

// listNAR parses b with go-nix's Reader and fails the test if it is not a
// valid NAR.
func listNAR(t testing.TB, b []byte) []entry {
	t.Helper()
	es, err := nartest.Parse(b)
	if err != nil {
		t.Fatalf("output is not a valid NAR: %v", err)
	}
	return es
}

func mustNew(t testing.TB, repls []Replacement, opts Options) *Rewriter {
	t.Helper()
	r, err := New(repls, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

func rewrite(r *Rewriter, in []byte) ([]byte, error) {
	var out bytes.Buffer
	err := r.RewriteNAR(&out, bytes.NewReader(in))
	return out.Bytes(), err
}

// padded is the same-length form of to standing in for from, spelled out
// independently of the implementation.
func padded(from, to string) string {
	return "/nix/store/" + strings.Repeat("/", len(from)-len(to)) + strings.TrimPrefix(to, "/nix/store/")
}
