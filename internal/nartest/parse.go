package nartest

import (
	"bytes"
	"errors"
	"io"

	"github.com/nix-community/go-nix/pkg/nar"
)

// Entry is one node of a parsed NAR, flattened for comparisons.
type Entry struct {
	Path       string
	Type       string
	Target     string
	Executable bool
	Contents   string
}

// Parse reads b with go-nix's NAR reader: the independent oracle that
// tests hold this project's readers and writers against.
func Parse(b []byte) ([]Entry, error) {
	nr, err := nar.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer nr.Close()
	var es []Entry
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
		es = append(es, Entry{h.Path, string(h.Type), h.LinkTarget, h.Executable, string(c)})
	}
}
