package nartest

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nar"
)

// TestEncodeMatchesNixDump compares with the 128-byte `nix-store --dump`
// of a file holding "hello wire\n", as captured from Nix 2.8.
func TestEncodeMatchesNixDump(t *testing.T) {
	const dump = `0d00000000000000 6e69782d61726368 6976652d31000000 0100000000000000
		2800000000000000 0400000000000000 7479706500000000 0700000000000000 726567756c617200
		0800000000000000 636f6e74656e7473 0b00000000000000 68656c6c6f207769 72650a0000000000
		0100000000000000 2900000000000000`
	want, err := hex.DecodeString(strings.Join(strings.Fields(dump), ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := Encode(Reg("hello wire\n")); !bytes.Equal(got, want) {
		t.Fatalf("Encode =\n%x\nwant\n%x", got, want)
	}
	nr, err := nar.NewReader(bytes.NewReader(Encode(Dir(Ent{"a", Exe("x")}, Ent{"b", Sym("a")}))))
	if err != nil {
		t.Fatal(err)
	}
	defer nr.Close()
	var paths []string
	for {
		h, err := nr.Next()
		if err != nil {
			break
		}
		paths = append(paths, h.Path)
	}
	if len(paths) != 3 || paths[1] != "/a" || paths[2] != "/b" {
		t.Fatalf("go-nix reads %v", paths)
	}
}
