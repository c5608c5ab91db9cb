package narstream

import (
	"errors"
	"io"
	"strings"

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

type entry = nartest.Entry

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
		es = append(es, entry{Path: h.Path, Type: string(h.Type), Target: h.LinkTarget, Executable: h.Executable, Contents: string(c)})
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
