package pairing

import (
	"fmt"
	"strings"
)

// NormalizeName removes the host suffix ("-aarch64-unknown-linux-gnu",
// given with or without its leading dash) from a cross derivation or store
// path name, as nixpkgs' make-derivation.nix inserts it: after the pname
// ("hello-aarch64-unknown-linux-gnu-2.12", possibly after "-static") or at
// the end when only name is set ("foo-1.0-aarch64-unknown-linux-gnu").
// The last occurrence that is a whole dash-separated segment run is
// removed. ok is false when the name has no suffix.
func NormalizeName(name, hostSuffix string) (normalized string, ok bool) {
	hostSuffix = strings.TrimPrefix(hostSuffix, "-")
	// A host suffix is one or more whole, non-empty dash-separated
	// segments; anything else (InferHostSuffix never yields it) would make
	// the removal ambiguous.
	if !wholeSegments(hostSuffix) {
		return name, false
	}
	s := "-" + hostSuffix
	for end := len(name); end > 0; {
		i := strings.LastIndex(name[:end], s)
		if i < 0 {
			break
		}
		after := i + len(s)
		if i > 0 && (after == len(name) || name[after] == '-') {
			return name[:i] + name[after:], true
		}
		end = i + len(s) - 1
	}
	return name, false
}

// InferHostSuffix finds the suffix that, inserted into native as a whole
// dash-separated segment, gives cross. It returns "" when the names are
// equal (a derivation without suffix), and an error when cross is not
// native with one inserted segment.
func InferHostSuffix(native, cross string) (string, error) {
	if native == cross {
		return "", nil
	}
	ins := len(cross) - len(native)
	if ins < 2 {
		return "", fmt.Errorf("cross name %q is not native name %q with a host suffix inserted", cross, native)
	}
	// Candidate insertion points are the dashes of cross; the first
	// that reproduces native wins, so "hello-2.12" + "aarch64-..." reads as
	// the segment "-aarch64-..." after "hello".
	for i := 0; i+ins <= len(cross); i++ {
		if cross[i] != '-' || i == 0 {
			continue
		}
		if cross[:i] == native[:i] && cross[i+ins:] == native[i:] {
			if after := i + ins; after < len(cross) && cross[after] != '-' {
				continue
			}
			suffix := cross[i+1 : i+ins]
			if !wholeSegments(suffix) {
				continue
			}
			return suffix, nil
		}
		if cross[:i] != native[:i] {
			break
		}
	}
	return "", fmt.Errorf("cross name %q is not native name %q with a host suffix inserted", cross, native)
}

// wholeSegments reports whether s is one or more non-empty dash-separated
// segments.
func wholeSegments(s string) bool {
	return s != "" && !strings.HasPrefix(s, "-") && !strings.HasSuffix(s, "-") && !strings.Contains(s, "--")
}

// targetAddons are what nixpkgs' gcc puts between the target config and
// the name of a cross compiler (crossNameAddon in
// pkgs/development/compilers/gcc/default.nix), longest first so that
// "<triple>-nolibc-gcc" loses the whole prefix.
var targetAddons = []string{"stage-final-", "stage-static-", "nolibc-", ""}

// PairingName is the name a cross derivation is paired by: NormalizeName,
// then the target prefix of a compiler built for the host as its target
// ("aarch64-unknown-linux-gnu-gcc-13.3.0", "aarch64-unknown-linux-gnu-
// nolibc-gcc-wrapper-13.3.0", "aarch64-unknown-linux-gnu-stage-final-gcc-
// 13.3.0"). marked is true when either was there: the name says the
// derivation was made for the host, which an unmarked namesake (a
// build-platform bash) cannot say.
func PairingName(name, hostSuffix string) (normalized string, marked bool) {
	n, marked := NormalizeName(name, hostSuffix)
	s := strings.TrimPrefix(hostSuffix, "-")
	if !wholeSegments(s) {
		return n, marked
	}
	for _, a := range targetAddons {
		p := s + "-" + a
		if strings.HasPrefix(n, p) && len(n) > len(p) {
			return n[len(p):], true
		}
	}
	return n, marked
}

// nativeAlias is the name a native derivation also answers to: the
// bootstrap compiler "xgcc-13.3.0" (pkgs/stdenv/linux/default.nix) is the
// gcc a cross compiler stands for. "" when there is none.
func nativeAlias(name string) string {
	if rest, ok := strings.CutPrefix(name, "xgcc-"); ok {
		return "gcc-" + rest
	}
	return ""
}
