// Package mapping says which native store path is served from which
// cross-built store path. It reads, validates and writes the mapping file:
//
//	{"hostSystem": "aarch64-linux",
//	 "buildSystem": "x86_64-linux",
//	 "paths": [{"native": "/nix/store/<h>-hello-2.12",
//	            "cross":  "/nix/store/<h>-hello-aarch64-unknown-linux-gnu-2.12",
//	            "deriver": "/nix/store/<h>-hello-2.12.drv", "output": "out"}]}
//
// deriver and output are optional, and so is pairedBy (why `map` paired the
// two, for `check` to repeat; serving ignores it), hostSystem (the Nix system
// the native paths are for) and buildSystem (the one the cross paths were
// built on): files written before they existed still load. Versions
// before pairedBy refuse files that have it (unknown fields are errors). Files written
// by Write are sorted by native path so that they diff well and load
// unchanged.
package mapping
