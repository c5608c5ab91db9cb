package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// version names this build: the module version when built from a tagged
// module, else the VCS revision the go tool recorded, so that "nix store
// ping" and bug reports say which server answered.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "decross-store"
	}
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return "decross-store " + v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "decross-store (devel)"
	}
	return "decross-store " + rev + dirty
}

func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	_, err := fmt.Fprintln(stdout, version())
	return err
}
