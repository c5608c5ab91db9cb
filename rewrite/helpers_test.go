package rewrite

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// storePath returns a syntactically valid store path whose hash part is
// derived from seed, so tests get stable, distinct paths.
func storePath(seed, name string) string {
	sum := sha256.Sum256([]byte(seed))
	return "/nix/store/" + nixbase32.EncodeToString(sum[:20]) + "-" + name
}

// The NAR builders below encode the format by hand, independently of
// go-nix's Writer, so expected bytes do not come from the code under test.

// wireStr encodes one NAR string: little-endian length, bytes, zero padding.
func wireStr(s string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	b = append(b, s...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

type node []string // the tokens of one NAR node

func reg(contents string) node {
	return node{"(", "type", "regular", "contents", contents, ")"}
}

func exe(contents string) node {
	return node{"(", "type", "regular", "executable", "", "contents", contents, ")"}
}

func sym(target string) node {
	return node{"(", "type", "symlink", "target", target, ")"}
}

type ent struct {
	name string
	n    node
}

func dir(entries ...ent) node {
	n := node{"(", "type", "directory"}
	for _, e := range entries {
		n = append(n, "entry", "(", "name", e.name, "node")
		n = append(n, e.n...)
		n = append(n, ")")
	}
	return append(n, ")")
}

func narOf(n node) []byte {
	b := wireStr("nix-archive-1")
	for _, t := range n {
		b = append(b, wireStr(t)...)
	}
	return b
}

// entry is one node of a parsed NAR, for assertions.
type entry struct {
	Path       string
	Type       nar.NodeType
	Target     string
	Executable bool
	Contents   string
}

// listNAR parses b with go-nix's Reader and fails the test if it is not a
// valid NAR.
func listNAR(t testing.TB, b []byte) []entry {
	t.Helper()
	es, err := parseNAR(b)
	if err != nil {
		t.Fatalf("output is not a valid NAR: %v", err)
	}
	return es
}

func parseNAR(b []byte) ([]entry, error) {
	nr, err := nar.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer nr.Close()
	var es []entry
	for {
		h, err := nr.Next()
		if errors.Is(err, io.EOF) {
			return es, nil
		}
		if err != nil {
			return nil, err
		}
		c, err := io.ReadAll(nr)
		if err != nil {
			return nil, err
		}
		es = append(es, entry{h.Path, h.Type, h.LinkTarget, h.Executable, string(c)})
	}
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
