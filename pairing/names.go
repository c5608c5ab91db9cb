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
