package narstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

const (
	// MaxNameLen is the longest entry name accepted (NAME_MAX, as in Nix).
	MaxNameLen = 255
	// MaxTargetLen is the longest symlink target accepted (PATH_MAX
	// without the NUL).
	MaxTargetLen = 4096 - 1
	// MaxDepth is how many levels of entries a NAR may nest: "/a" is at
	// depth 1. Nix puts no limit on it, but no store path comes near, and
	// without one a NAR of nested directories costs its readers memory and
	// stack out of proportion to its size.
	MaxDepth = 256
)

// NodeType is the type of a NAR node, spelled as in the NAR.
type NodeType string

// The node types a NAR can hold.
const (
	TypeRegular   NodeType = "regular"
	TypeDirectory NodeType = "directory"
	TypeSymlink   NodeType = "symlink"
)

// Header describes one node of a NAR.
type Header struct {
	// Path is the node's path inside the NAR: "/" for the root,
	// "/bin/hello" below it.
	Path       string
	Type       NodeType
	Size       int64  // contents size of a regular file
	Executable bool   // regular files only
	LinkTarget string // symlinks only, never empty
}

// Reader is a pull parser for one NAR. The zero value is not usable; create
// one with NewReader, or reuse one with Reset.
type Reader struct {
	r     io.Reader
	state state
	// names holds the path of the innermost open directory's newest
	// entry, "/a/b/c"; dirs[i] is where the component of directory level
	// i's newest entry starts in it. Keeping one buffer instead of a path
	// string per open directory keeps memory linear in the depth.
	names []byte
	dirs  []int
	left  int64  // unread content bytes of the current file
	size  int64  // size of the current file
	hdr   Header // reused for every node
	err   error  // sticky: once set, returned by every call
	pad   [8]byte
	buf   [MaxTargetLen + 1]byte
}

type state int

const (
	stStart     state = iota
	stFile            // header of a regular file returned, contents pending
	stAfterNode       // a node's closing ")" has been read
	stInDir           // inside a directory, before "entry" or ")"
	stDone
)

// NewReader returns a Reader for the NAR that r starts with.
func NewReader(r io.Reader) *Reader {
	p := &Reader{}
	p.Reset(r)
	return p
}

// Reset makes p read a new NAR from r, reusing its buffers.
func (p *Reader) Reset(r io.Reader) {
	p.r = r
	p.state = stStart
	p.names = p.names[:0]
	p.dirs = p.dirs[:0]
	p.left, p.size = 0, 0
	p.hdr = Header{}
	p.err = nil
}

// Next advances to the next node in NAR order (a directory before its
// entries, entries sorted by name) and returns its header, valid until the
// next call. It returns io.EOF, unwrapped, after the root node is complete;
// any other error means the NAR is invalid or could not be read, and is
// returned again by every later call. Unread contents of a regular file are
// an error rather than skipped.
func (p *Reader) Next() (*Header, error) {
	if p.err != nil {
		return nil, p.err
	}
	h, err := p.next()
	if err != nil {
		p.err = err
	}
	return h, err
}

// Read reads the contents of the current regular file. It returns io.EOF
// at their end, and when the current node is not a regular file. A NAR
// that ends inside the contents gives io.ErrUnexpectedEOF.
func (p *Reader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
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
		p.err = fmt.Errorf("%s: %w", p.hdr.Path, err)
		return n, p.err
	}
	return n, nil
}

func (p *Reader) next() (*Header, error) {
	switch p.state {
	case stStart:
		if err := p.expect("nix-archive-1"); err != nil {
			return nil, fmt.Errorf("invalid nar magic: %w", err)
		}
		p.hdr.Path = "/"
		return p.node()
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
				return nil, fmt.Errorf("%s: %w", p.names, err)
			}
			p.state = stInDir
		}
		top := p.dirs[len(p.dirs)-1]
		tok, err := p.token(len("entry"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.dirPath(), err)
		}
		switch tok {
		case ")":
			p.dirs = p.dirs[:len(p.dirs)-1]
			p.names = p.names[:top]
			p.state = stAfterNode
			continue
		case "entry":
		default:
			return nil, fmt.Errorf("%s: unexpected token %q, want \"entry\" or \")\"", p.dirPath(), tok)
		}
		if err := p.expect("("); err != nil {
			return nil, fmt.Errorf("%s: %w", p.dirPath(), err)
		}
		if err := p.expect("name"); err != nil {
			return nil, fmt.Errorf("%s: %w", p.dirPath(), err)
		}
		nb, err := p.bytes(MaxNameLen)
		if err != nil {
			return nil, fmt.Errorf("%s: entry name: %w", p.dirPath(), err)
		}
		if err := checkName(nb); err != nil {
			return nil, fmt.Errorf("%s: %w", p.dirPath(), err)
		}
		if prev := p.names[top:]; len(prev) > 0 && string(nb) <= string(prev[1:]) {
			return nil, fmt.Errorf("%s: entry %q after %q: not sorted or duplicate", p.dirPath(), nb, prev[1:])
		}
		p.names = append(append(p.names[:top], '/'), nb...)
		p.hdr.Path = string(p.names)
		if err := p.expect("node"); err != nil {
			return nil, fmt.Errorf("%s: %w", p.hdr.Path, err)
		}
		return p.node()
	}
}

// dirPath is the path of the innermost open directory, for errors.
func (p *Reader) dirPath() string {
	if len(p.dirs) <= 1 {
		return "/"
	}
	return string(p.names[:p.dirs[len(p.dirs)-1]])
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

// node parses the node at p.hdr.Path up to its contents (files), its
// closing ")" (symlinks) or its first entry (directories).
func (p *Reader) node() (*Header, error) {
	path := p.hdr.Path
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
	p.hdr = Header{Path: path}
	switch typ {
	case "regular":
		p.hdr.Type = TypeRegular
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
		p.hdr.Type = TypeSymlink
		if err := p.expect("target"); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		t, err := p.bytes(MaxTargetLen)
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
		if len(p.dirs) >= MaxDepth {
			return nil, fmt.Errorf("%s: directories nested more than %d levels deep", path, MaxDepth)
		}
		p.hdr.Type = TypeDirectory
		p.dirs = append(p.dirs, len(p.names))
		p.state = stInDir
	default:
		return nil, fmt.Errorf("%s: unknown node type %q", path, typ)
	}
	return &p.hdr, nil
}

func (p *Reader) full(b []byte) error {
	_, err := io.ReadFull(p.r, b)
	if err == io.EOF {
		return io.ErrUnexpectedEOF // inside a NAR, any end is premature
	}
	return err
}

func (p *Reader) uint64() (uint64, error) {
	if err := p.full(p.buf[:8]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.buf[:8]), nil
}

// bytes reads a string field of at most max bytes into p.buf; the result
// is valid until the next read.
func (p *Reader) bytes(max int) ([]byte, error) {
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
func (p *Reader) token(max int) (string, error) {
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

func (p *Reader) expect(want string) error {
	b, err := p.bytes(len(want))
	if err != nil {
		return fmt.Errorf("want %q: %w", want, err)
	}
	if string(b) != want {
		return fmt.Errorf("unexpected token %q, want %q", b, want)
	}
	return nil
}

func (p *Reader) padding(n int64) error {
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
