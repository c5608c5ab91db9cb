package rewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/nix-community/go-nix/pkg/nar"
)

const (
	nameMax   = 255      // NAME_MAX, as in Nix and go-nix
	targetMax = 4096 - 1 // PATH_MAX without the NUL
)

// narReader is a strict, synchronous NAR parser with the same interface as
// go-nix's nar.Reader (Next, then Read for contents). It exists because
// go-nix's Reader accepts non-zero padding after tokens and treats a NAR cut
// off at a token boundary as complete, keeps reading the source from a
// goroutine after Close, and allocates about 1 KiB per token. This one
// accepts exactly the NARs Nix itself accepts and that re-encode to the same
// bytes; FuzzNARReader holds it to go-nix's Reader as an oracle.
//
// It reads exactly the NAR's bytes from r and nothing beyond them.
type narReader struct {
	r     io.Reader
	state readerState
	dirs  []dirFrame // open directories, innermost last
	left  int64      // unread content bytes of the current file
	size  int64      // size of the current file
	hdr   nar.Header // reused for every entry
	err   error      // sticky: once set, returned by every call
	pad   [8]byte    // scratch for padding; a local would escape to the heap
	buf   [targetMax + 1]byte
}

type dirFrame struct {
	path string
	prev string // last entry name, for the sort check
}

type readerState int

const (
	stStart     readerState = iota
	stFile                  // header of a regular file returned, contents pending
	stAfterNode             // a node's closing ")" has been read
	stInDir                 // inside a directory, before "entry" or ")"
	stDone
)

func (p *narReader) reset(r io.Reader) {
	*p = narReader{r: r, dirs: p.dirs[:0]}
}

// Next advances to the next node and returns its header, valid until the
// next call. It returns io.EOF after the root node is complete.
func (p *narReader) Next() (*nar.Header, error) {
	if p.err != nil {
		return nil, p.err
	}
	h, err := p.next()
	if err != nil {
		p.err = err
	}
	return h, err
}

func (p *narReader) next() (*nar.Header, error) {
	switch p.state {
	case stStart:
		if err := p.expect("nix-archive-1"); err != nil {
			return nil, fmt.Errorf("invalid nar magic: %w", err)
		}
		return p.node("/")
	case stFile:
		if p.left != 0 {
			return nil, fmt.Errorf("%s: %d content bytes not read", p.hdr.Path, p.left)
		}
		if err := p.padding(p.size); err != nil {
			return nil, fmt.Errorf("%s: %w", p.hdr.Path, err)
		}
		if err := p.expect(")"); err != nil {
			return nil, fmt.Errorf("%s: %w", p.hdr.Path, err)
		}
		p.state = stAfterNode
	case stDone:
		return nil, io.EOF
	}
	for {
		if p.state == stAfterNode {
			if len(p.dirs) == 0 {
				p.state = stDone
				return nil, io.EOF
			}
			if err := p.expect(")"); err != nil { // closes the entry
				return nil, err
			}
			p.state = stInDir
		}
		top := &p.dirs[len(p.dirs)-1]
		tok, err := p.token(len("entry"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", top.path, err)
		}
		switch tok {
		case ")":
			p.dirs = p.dirs[:len(p.dirs)-1]
			p.state = stAfterNode
			continue
		case "entry":
		default:
			return nil, fmt.Errorf("%s: unexpected token %q, want \"entry\" or \")\"", top.path, tok)
		}
		if err := p.expect("("); err != nil {
			return nil, err
		}
		if err := p.expect("name"); err != nil {
			return nil, err
		}
		nb, err := p.bytes(nameMax)
		if err != nil {
			return nil, fmt.Errorf("%s: entry name: %w", top.path, err)
		}
		if err := checkName(nb); err != nil {
			return nil, fmt.Errorf("%s: %w", top.path, err)
		}
		if top.prev != "" && string(nb) <= top.prev {
			return nil, fmt.Errorf("%s: entry %q after %q: not sorted or duplicate", top.path, nb, top.prev)
		}
		// One allocation for the path; the name is its tail.
		var path string
		if top.path == "/" {
			path = "/" + string(nb)
		} else {
			path = top.path + "/" + string(nb)
		}
		top.prev = path[len(path)-len(nb):]
		if err := p.expect("node"); err != nil {
			return nil, err
		}
		return p.node(path)
	}
}

func checkName(n []byte) error {
	switch {
	case len(n) == 0:
		return errors.New("empty entry name")
	case string(n) == "." || string(n) == "..":
		return fmt.Errorf("invalid entry name %q", n)
	case strings.ContainsAny(string(n), "/\x00"):
		return fmt.Errorf("entry name %q contains '/' or NUL", n)
	}
	return nil
}

// node parses a node up to its contents (files), its closing ")"
// (symlinks) or its first entry (directories).
func (p *narReader) node(path string) (*nar.Header, error) {
	if err := p.expect("("); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := p.expect("type"); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	typ, err := p.token(len("directory"))
	if err != nil {
		return nil, fmt.Errorf("%s: node type: %w", path, err)
	}
	p.hdr = nar.Header{Path: path}
	switch typ {
	case "regular":
		p.hdr.Type = nar.TypeRegular
		tok, err := p.token(len("executable"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if tok == "executable" {
			p.hdr.Executable = true
			if err := p.expect(""); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if tok, err = p.token(len("contents")); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		if tok != "contents" {
			return nil, fmt.Errorf("%s: unexpected token %q, want \"contents\"", path, tok)
		}
		n, err := p.uint64()
		if err != nil {
			return nil, fmt.Errorf("%s: content size: %w", path, err)
		}
		if n > math.MaxInt64 {
			return nil, fmt.Errorf("%s: content size %d too large", path, n)
		}
		p.hdr.Size = int64(n)
		p.left, p.size = int64(n), int64(n)
		p.state = stFile
	case "symlink":
		p.hdr.Type = nar.TypeSymlink
		if err := p.expect("target"); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		t, err := p.bytes(targetMax)
		if err != nil {
			return nil, fmt.Errorf("%s: symlink target: %w", path, err)
		}
		if len(t) == 0 {
			return nil, fmt.Errorf("%s: empty symlink target", path)
		}
		p.hdr.LinkTarget = string(t)
		if err := p.expect(")"); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		p.state = stAfterNode
	case "directory":
		p.hdr.Type = nar.TypeDirectory
		p.dirs = append(p.dirs, dirFrame{path: path})
		p.state = stInDir
	default:
		return nil, fmt.Errorf("%s: unknown node type %q", path, typ)
	}
	return &p.hdr, nil
}

// Read reads the contents of the current regular file; io.EOF at its end.
func (p *narReader) Read(b []byte) (int, error) {
	if p.state != stFile || p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.left -= int64(n)
	if err == io.EOF {
		err = nil
		if p.left > 0 && n == 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		p.err = err
	}
	return n, err
}

func (p *narReader) full(b []byte) error {
	_, err := io.ReadFull(p.r, b)
	if err == io.EOF {
		return io.ErrUnexpectedEOF // inside a NAR, any end is premature
	}
	return err
}

func (p *narReader) uint64() (uint64, error) {
	if err := p.full(p.buf[:8]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.buf[:8]), nil
}

// bytes reads a string field of at most max bytes into p.buf; the result
// is valid until the next read.
func (p *narReader) bytes(max int) ([]byte, error) {
	n, err := p.uint64()
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("string of %d bytes exceeds the limit of %d", n, max)
	}
	b := p.buf[:n]
	if err := p.full(b); err != nil {
		return nil, err
	}
	if err := p.padding(int64(n)); err != nil {
		return nil, err
	}
	return b, nil
}

// token reads a keyword; longer strings are an error rather than read.
func (p *narReader) token(max int) (string, error) {
	b, err := p.bytes(max)
	if err != nil {
		return "", err
	}
	return internToken(b), nil
}

// internToken returns the keyword b spells without allocating.
func internToken(b []byte) string {
	for _, t := range [...]string{"(", ")", "type", "regular", "symlink", "directory", "executable", "contents", "entry", "name", "node", "target", ""} {
		if string(b) == t {
			return t
		}
	}
	return string(b)
}

func (p *narReader) expect(want string) error {
	b, err := p.bytes(len(want))
	if err != nil {
		return fmt.Errorf("want %q: %w", want, err)
	}
	if string(b) != want {
		return fmt.Errorf("unexpected token %q, want %q", b, want)
	}
	return nil
}

func (p *narReader) padding(n int64) error {
	m := n % 8
	if m == 0 {
		return nil
	}
	if err := p.full(p.pad[m:]); err != nil {
		return err
	}
	for _, c := range p.pad[m:] {
		if c != 0 {
			return errors.New("non-zero padding")
		}
	}
	return nil
}
