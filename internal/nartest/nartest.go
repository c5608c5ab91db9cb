// Package nartest writes NAR bytes token by token, for tests. It encodes
// the format by hand, independently of the NAR readers and writers under
// test (this project's and go-nix's), so expected bytes never come from
// the code being checked.
package nartest

import "encoding/binary"

// Str encodes one NAR string: little-endian length, bytes, zero padding.
func Str(s string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	b = append(b, s...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// Node is the token list of one NAR node.
type Node []string

// Reg is a regular file.
func Reg(contents string) Node {
	return Node{"(", "type", "regular", "contents", contents, ")"}
}

// Exe is an executable regular file.
func Exe(contents string) Node {
	return Node{"(", "type", "regular", "executable", "", "contents", contents, ")"}
}

// Sym is a symlink.
func Sym(target string) Node {
	return Node{"(", "type", "symlink", "target", target, ")"}
}

// Ent is one directory entry.
type Ent struct {
	Name string
	Node Node
}

// E is the entry name holding n.
func E(name string, n Node) Ent { return Ent{Name: name, Node: n} }

// Dir is a directory with entries in the order given (tests of ordering
// checks pass them unsorted on purpose).
func Dir(entries ...Ent) Node {
	n := Node{"(", "type", "directory"}
	for _, e := range entries {
		n = append(n, "entry", "(", "name", e.Name, "node")
		n = append(n, e.Node...)
		n = append(n, ")")
	}
	return append(n, ")")
}

// Encode is the NAR of n: the magic, then every token.
func Encode(n Node) []byte {
	b := Str("nix-archive-1")
	for _, t := range n {
		b = append(b, Str(t)...)
	}
	return b
}
