package narstream

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/decross-store/decross-store/internal/nartest"
)

// The NAR builders come from internal/nartest, which encodes the format by
// hand, independently of the code under test and of go-nix.
type node = nartest.Node

var (
	wireStr = nartest.Str
	reg     = nartest.Reg
	exe     = nartest.Exe
	sym     = nartest.Sym
	narOf   = nartest.Encode
	ent     = nartest.E
	dir     = nartest.Dir
)

// nested is a chain of depth directories named "d" ending in an empty file.
func nested(depth int) node {
	n := reg("")
	for range depth {
		n = dir(ent("d", n))
	}
	return n
}

// entry is one node of a parsed NAR, for comparisons.
type entry struct {
	Path       string
	Type       string
	Target     string
	Executable bool
	Contents   string
}

func readAll(p *Reader) ([]entry, error) {
	var es []entry
	for {
		h, err := p.Next()
		if err == io.EOF {
			return es, nil
		}
		if err != nil {
			return nil, err
		}
		c, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		es = append(es, entry{h.Path, string(h.Type), h.LinkTarget, h.Executable, string(c)})
	}
}

// parseGoNix reads b with go-nix's Reader, the oracle.
func parseGoNix(b []byte) ([]entry, error) {
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
		es = append(es, entry{h.Path, string(h.Type), h.LinkTarget, h.Executable, string(c)})
	}
}

// encode writes entries, in NAR order, back into a NAR. go-nix's Writer
// cannot serve: it rejects valid names that start with "..".
func encode(es []entry) ([]byte, error) {
	if len(es) == 0 || es[0].Path != "/" {
		return nil, errors.New("no root node")
	}
	var b []byte
	str := func(s string) { b = append(b, wireStr(s)...) }
	str("nix-archive-1")
	open := 0 // directories open, the root counting as one
	for i, e := range es {
		depth := 0
		if e.Path != "/" {
			depth = strings.Count(e.Path, "/")
		}
		if i > 0 {
			if depth == 0 || depth > open {
				return nil, errors.New(e.Path + ": parent is not open")
			}
			for open > depth {
				str(")")
				str(")")
				open--
			}
			str("entry")
			str("(")
			str("name")
			str(e.Path[strings.LastIndexByte(e.Path, '/')+1:])
			str("node")
		}
		str("(")
		str("type")
		str(e.Type)
		switch e.Type {
		case "directory":
			open++
			continue
		case "symlink":
			str("target")
			str(e.Target)
		default:
			if e.Executable {
				str("executable")
				str("")
			}
			str("contents")
			str(e.Contents)
		}
		str(")")
		if depth > 0 {
			str(")")
		}
	}
	for ; open > 0; open-- {
		str(")")
		if open > 1 {
			str(")")
		}
	}
	return b, nil
}
