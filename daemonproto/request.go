package daemonproto

import (
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/storepath"
)

const storePrefix = storepath.StoreDir + "/"

// checkStorePath checks p as Nix's parseStorePath does. go-nix's parser
// cleans the path first, so it alone would let "<path>/", "<path>/x/.."
// and "<path>/../<other>" through: only the plain form may pass. Nix also
// caps the name at 211 characters and refuses a leading dot.
func checkStorePath(p string) error {
	sp, err := storepath.FromAbsolutePath(p)
	if err != nil {
		return fmt.Errorf("%q is not a store path: %w", p, err)
	}
	if sp.Absolute() != p {
		return fmt.Errorf("%q is not a store path: nothing may follow the name", p)
	}
	if len(sp.Name) > 211 || sp.Name[0] == '.' {
		return fmt.Errorf("%q is not a store path: bad name", p)
	}
	return nil
}

// listEntryOverhead is what one list entry costs beyond its string bytes
// (its slot in the slice, a string header, the answer kept for it), so
// that a list of a million one-byte strings is charged like what it
// really holds.
const listEntryOverhead = 64

// keep charges n bytes against what the current request may retain.
func (c *serverConn) keep(n uint64) error {
	if n > c.budget {
		return malformed("request too large: more than %d bytes of strings", c.lim.request)
	}
	c.budget -= n
	return nil
}

func (c *serverConn) readStr(what string, max uint64) (string, error) {
	s, err := c.r.str(what, max)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	if err := c.keep(uint64(len(s))); err != nil {
		return "", err
	}
	return s, nil
}

// readStorePath reads and validates a store path; a bad one is malformed
// input, as it is for the Nix daemon.
func (c *serverConn) readStorePath() (string, error) {
	p, err := c.readStr("store path", maxStorePathLen)
	if err != nil {
		return "", err
	}
	if err := checkStorePath(p); err != nil {
		return "", &malformedError{msg: err.Error()}
	}
	return p, nil
}

// readStorePaths reads a list of store paths, growing the slice as entries
// arrive rather than trusting the announced count.
func (c *serverConn) readStorePaths() ([]string, error) {
	n, err := c.r.count("store path list", c.lim.list)
	if err != nil {
		return nil, fmt.Errorf("read store path list: %w", err)
	}
	var out []string
	for i := uint64(0); i < n; i++ {
		p, err := c.readStorePath()
		if err != nil {
			return nil, err
		}
		if err := c.keep(listEntryOverhead); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (c *serverConn) skipInts(n int) error {
	for i := 0; i < n; i++ {
		if _, err := c.r.u64(); err != nil {
			return fmt.Errorf("read request: %w", err)
		}
	}
	return nil
}

func (c *serverConn) skipStr(what string) error {
	if err := c.r.skipStr(what, c.lim.str); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

func (c *serverConn) skipStrs(what string) error {
	if err := c.r.skipStrs(what, c.lim.list, c.lim.str); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

// skipLarge drains a string that may legitimately be big (file contents).
func (c *serverConn) skipLarge(what string) error {
	if err := c.r.skipStr(what, c.lim.drain); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

func (c *serverConn) skipFramed() error {
	if err := c.r.skipFramed(c.lim.drain); err != nil {
		return fmt.Errorf("read framed upload: %w", err)
	}
	return nil
}

// derivedPath is one entry of BuildPaths, BuildPathsWithResults or
// QueryMissing: an opaque store path, or drv!out1,out2 / drv!* (since 1.30;
// older clients used the same syntax for paths with outputs).
type derivedPath struct {
	raw  string
	path string // the store path: the opaque path, or the derivation
	drv  bool   // outputs of a derivation were requested
}

func (c *serverConn) readDerivedPaths() ([]derivedPath, error) {
	n, err := c.r.count("derived path list", c.lim.list)
	if err != nil {
		return nil, fmt.Errorf("read derived paths: %w", err)
	}
	var out []derivedPath
	for i := uint64(0); i < n; i++ {
		s, err := c.readStr("derived path", maxStorePathLen+maxShortLen)
		if err != nil {
			return nil, err
		}
		d := derivedPath{raw: s, path: s}
		if p, outs, ok := strings.Cut(s, "!"); ok {
			if outs == "" {
				return nil, malformed("derived path %q names no outputs", s)
			}
			d.path, d.drv = p, true
		}
		if err := checkStorePath(d.path); err != nil {
			return nil, &malformedError{msg: err.Error()}
		}
		if err := c.keep(listEntryOverhead); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}
