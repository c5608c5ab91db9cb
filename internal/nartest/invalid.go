package nartest

import (
	"bytes"
	"fmt"
)

// Invalid is a NAR every reader must reject, named for what is wrong.
type Invalid struct {
	Name string
	NAR  []byte
}

// InvalidNARs lists malformed NARs that do not depend on a reader's limits:
// bad magic and tokens, bad or unsorted entry names, non-zero padding,
// absurd lengths, and a small valid NAR truncated at every byte (named
// "truncated at N").
func InvalidNARs() []Invalid {
	valid := Encode(Dir(E("a", Reg("abc")), E("b", Sym("/x"))))
	badPadding := bytes.Clone(valid)
	// "abc" is followed by five padding bytes; make one non-zero.
	badPadding[bytes.Index(badPadding, []byte("abc"))+4] = 1
	badTokenPadding := Encode(Reg(""))
	badTokenPadding[len(badTokenPadding)-1] = '0' // the padding of the final ")"

	cases := []Invalid{
		{"empty input", nil},
		{"bad magic", append(Str("nix-archive-2"), Encode(Reg(""))[len(Str("nix-archive-1")):]...)},
		{"bad node type", Encode(Node{"(", "type", "fifo", ")"})},
		{"bad token", Encode(Node{"(", "type", "regular", "contentz", "", ")"})},
		{"missing close", Encode(Node{"(", "type", "regular", "contents", "x"})},
		{"dotdot name", Encode(Dir(E("..", Reg("x"))))},
		{"nested dotdot name", Encode(Dir(E("a", Dir(E("..", Reg("x"))))))},
		{"dot name", Encode(Dir(E("a", Dir(E(".", Reg("x"))))))},
		{"empty name", Encode(Dir(E("", Reg("x"))))},
		{"slash in name", Encode(Dir(E("a/b", Reg("x"))))},
		{"NUL in name", Encode(Dir(E("a\x00b", Reg("x"))))},
		{"duplicate names", Encode(Dir(E("a", Reg("x")), E("a", Reg("y"))))},
		{"unsorted entries", Encode(Dir(E("b", Reg("x")), E("a", Reg("y"))))},
		{"unsorted nested", Encode(Dir(E("a", Dir(E("y", Reg("")), E("x", Reg(""))))))},
		{"unsorted after subdirectory", Encode(Dir(E("b", Dir(E("z", Reg("")))), E("a", Reg(""))))},
		{"non-zero content padding", badPadding},
		{"non-zero token padding", badTokenPadding},
		{"empty symlink target", Encode(Sym(""))},
		{"executable without placeholder", Encode(Node{"(", "type", "regular", "executable", "contents", "", ")"})},
		{"entry in a file", Encode(Node{"(", "type", "regular", "contents", "", "entry", ")"})},
		{"huge content length", append(Encode(Node{"(", "type", "regular", "contents"}), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)},
		{"huge name length", append(Encode(Node{"(", "type", "directory", "entry", "(", "name"}), 0, 0, 0, 0, 0, 0, 0, 1)},
	}
	for n := range len(valid) {
		cases = append(cases, Invalid{fmt.Sprintf("truncated at %d", n), valid[:n]})
	}
	return cases
}
