package rewrite

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"path"

	"strings"

	"github.com/decross-store/decross-store/narstream"
)

// narEncoder writes a NAR from headers in NAR order, as narstream.Reader
// returns them. It replaces go-nix's Writer, which mistakes entry names that start
// with ".." (valid, e.g. "..data") for a step up the tree and fails on
// them, and which needs a goroutine and channel round trips per header.
// Names and order have already been validated on the reading side, so it
// tracks only how many directories are open, not their paths: memory stays
// constant however deep the tree.
type narEncoder struct {
	w    *bufio.Writer
	dirs int     // open directories, the root counting as one
	left int64   // content bytes still expected for the current file
	size int64   // size of the current file
	file bool    // inside a regular file's contents
	root bool    // the root node has been written
	err  error   // first write error; everything after it is dropped
	num  [8]byte // scratch; a local would escape to the heap
	zero [8]byte
}

func (e *narEncoder) reset(w *bufio.Writer) {
	*e = narEncoder{w: w}
	e.str("nix-archive-1")
}

func (e *narEncoder) str(s string) {
	if e.err != nil {
		return
	}
	binary.LittleEndian.PutUint64(e.num[:], uint64(len(s)))
	if _, e.err = e.w.Write(e.num[:]); e.err != nil {
		return
	}
	if _, e.err = e.w.WriteString(s); e.err != nil {
		return
	}
	e.pad(int64(len(s)))
}

func (e *narEncoder) pad(n int64) {
	if m := n % 8; m != 0 {
		_, e.err = e.w.Write(e.zero[m:])
	}
}

// begin opens the node for h: closes finished directories and writes the
// entry and node preamble.
func (e *narEncoder) begin(h *narstream.Header) error {
	if e.file {
		return fmt.Errorf("%s: previous file incomplete", h.Path)
	}
	if !e.root {
		if h.Path != "/" {
			return fmt.Errorf("%s: first node must be the root", h.Path)
		}
		e.root = true
	} else {
		// An entry at depth d ("/a/b" is at 2) lives in the directory
		// open at depth d-1; deeper ones are complete.
		depth := strings.Count(h.Path, "/")
		if h.Path == "/" || depth > e.dirs {
			return fmt.Errorf("%s: parent directory is not open", h.Path)
		}
		for e.dirs > depth {
			e.closeDir()
		}
		e.str("entry")
		e.str("(")
		e.str("name")
		e.str(path.Base(h.Path))
		e.str("node")
	}
	e.str("(")
	e.str("type")
	e.str(string(h.Type))
	return e.err
}

func (e *narEncoder) closeDir() {
	e.dirs--
	e.str(")") // the directory node
	if e.dirs > 0 {
		e.str(")") // its entry
	}
}

// endNode closes a non-directory node and, below the root, its entry.
func (e *narEncoder) endNode() {
	e.str(")")
	if e.dirs > 0 {
		e.str(")")
	}
}

func (e *narEncoder) directory(h *narstream.Header) error {
	if err := e.begin(h); err != nil {
		return err
	}
	e.dirs++
	return e.err
}

func (e *narEncoder) symlink(h *narstream.Header, target string) error {
	if err := e.begin(h); err != nil {
		return err
	}
	e.str("target")
	e.str(target)
	e.endNode()
	return e.err
}

// beginFile starts a regular file of size bytes; its contents follow through
// write, and endFile closes it.
func (e *narEncoder) beginFile(h *narstream.Header, size int64) error {
	if err := e.begin(h); err != nil {
		return err
	}
	if h.Executable {
		e.str("executable")
		e.str("")
	}
	e.str("contents")
	if e.err != nil {
		return e.err
	}
	binary.LittleEndian.PutUint64(e.num[:], uint64(size))
	_, e.err = e.w.Write(e.num[:])
	e.file, e.left, e.size = true, size, size
	return e.err
}

func (e *narEncoder) write(p []byte) error {
	if !e.file || int64(len(p)) > e.left {
		return fmt.Errorf("file contents exceed the announced %d bytes", e.size)
	}
	if e.err != nil {
		return e.err
	}
	_, e.err = e.w.Write(p)
	e.left -= int64(len(p))
	return e.err
}

func (e *narEncoder) endFile() error {
	if !e.file || e.left != 0 {
		return fmt.Errorf("file contents %d bytes short of the announced %d", e.left, e.size)
	}
	e.file = false
	if e.err == nil {
		e.pad(e.size)
	}
	e.endNode()
	return e.err
}

// finish closes all open directories and flushes.
func (e *narEncoder) finish() error {
	if e.file || !e.root {
		return fmt.Errorf("incomplete NAR")
	}
	for e.dirs > 0 {
		e.closeDir()
	}
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}
