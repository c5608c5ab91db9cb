package daemonproto

// The write operations: each is read to its end, so that the connection
// stays in sync, then refused, since this store is read-only.

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/decross-store/decross-store/narstream"
)

// skipNAR consumes one NAR. Parsing it is the only way to find its end;
// narstream bounds its depth, names and symlink targets, and each file's
// contents are bounded here by the drain limit.
func (c *serverConn) skipNAR() error {
	nr := narstream.NewReader(c.r.r)
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return narError(err)
		}
		if h.Type != narstream.TypeRegular {
			continue
		}
		if uint64(h.Size) > c.lim.drain {
			return malformed("nar: %s: file of %d bytes exceeds the limit of %d", h.Path, h.Size, c.lim.drain)
		}
		if _, err := io.Copy(io.Discard, nr); err != nil {
			return narError(err)
		}
	}
}

// narError tells a NAR cut short by the connection (an I/O failure) from
// one that breaks the format (malformed).
func narError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("nar: %w", err)
	}
	return malformed("nar: %v", err)
}

func (c *serverConn) addToStore() error {
	if c.atLeast(25) {
		for _, what := range []string{"name", "content-address method"} {
			if err := c.skipStr(what); err != nil {
				return err
			}
		}
		if err := c.skipStrs("references"); err != nil {
			return err
		}
		if err := c.skipInts(1); err != nil { // repair
			return err
		}
		if err := c.skipFramed(); err != nil {
			return err
		}
		return c.refuse("AddToStore")
	}
	if err := c.skipStr("name"); err != nil {
		return err
	}
	if err := c.skipInts(2); err != nil { // fixed, recursive
		return err
	}
	if err := c.skipStr("hash algorithm"); err != nil {
		return err
	}
	// Even flat files travel as a NAR here.
	if err := c.skipNAR(); err != nil {
		return err
	}
	return c.refuse("AddToStore")
}

func (c *serverConn) addTextToStore() error {
	if err := c.skipStr("name"); err != nil {
		return err
	}
	if err := c.skipLarge("text"); err != nil {
		return err
	}
	if err := c.skipStrs("references"); err != nil {
		return err
	}
	return c.refuse("AddTextToStore")
}

// skipPathInfo consumes a ValidPathInfo without its path, as AddToStoreNar
// and AddMultipleToStore send it.
func skipPathInfo(c *serverConn) error {
	for _, what := range []string{"deriver", "nar hash"} {
		if err := c.skipStr(what); err != nil {
			return err
		}
	}
	if err := c.skipStrs("references"); err != nil {
		return err
	}
	if err := c.skipInts(3); err != nil { // registrationTime, narSize, ultimate
		return err
	}
	if err := c.skipStrs("signatures"); err != nil {
		return err
	}
	return c.skipStr("content address")
}

func (c *serverConn) addToStoreNar() error {
	if err := c.skipStr("store path"); err != nil {
		return err
	}
	if err := skipPathInfo(c); err != nil {
		return err
	}
	if err := c.skipInts(2); err != nil { // repair, dontCheckSigs
		return err
	}
	switch {
	case c.atLeast(23):
		if err := c.skipFramed(); err != nil {
			return err
		}
	case c.atLeast(21):
		// The NAR would come only when pulled with STDERR_READ; not pulling
		// it and failing leaves the client in sync.
	default:
		if err := c.skipNAR(); err != nil {
			return err
		}
	}
	return c.refuse("AddToStoreNar")
}

func (c *serverConn) addMultipleToStore() error {
	if err := c.skipInts(2); err != nil { // repair, dontCheckSigs
		return err
	}
	fr := &framedReader{r: &c.r, maxFrame: c.lim.drain}
	var count [8]byte
	n, err := io.ReadFull(fr, count[:])
	if err != nil && !(n == 0 && err == io.EOF) {
		return malformed("read AddMultipleToStore count: %v", err)
	}
	var rest int64
	if err == nil {
		// Whatever follows a count of zero would be garbage; refuse it.
		rest, err = io.Copy(io.Discard, fr)
		if err != nil {
			return fmt.Errorf("read framed upload: %w", err)
		}
	}
	if n == 8 && count == [8]byte{} && rest == 0 {
		// "nix copy --to" sends this when every path is already present.
		c.last()
		return nil
	}
	return c.refuse("AddMultipleToStore")
}

func (c *serverConn) buildDerivation() error {
	if err := c.skipStr("derivation path"); err != nil {
		return err
	}
	n, err := c.r.count("derivation outputs", c.lim.list)
	if err != nil {
		return fmt.Errorf("read derivation outputs: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		for _, what := range []string{"output name", "output path", "hash algorithm", "hash"} {
			if err := c.skipStr(what); err != nil {
				return err
			}
		}
	}
	if err := c.skipStrs("input sources"); err != nil {
		return err
	}
	for _, what := range []string{"platform", "builder"} {
		if err := c.skipStr(what); err != nil {
			return err
		}
	}
	if err := c.skipStrs("arguments"); err != nil {
		return err
	}
	n, err = c.r.count("environment", c.lim.list)
	if err != nil {
		return fmt.Errorf("read environment: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		if err := c.skipStr("variable name"); err != nil {
			return err
		}
		// Environment values may carry whole files (passAsFile, structured
		// attrs), so they get the large cap.
		if err := c.skipLarge("variable value"); err != nil {
			return err
		}
	}
	if err := c.skipInts(1); err != nil { // build mode
		return err
	}
	return c.refuse("BuildDerivation")
}

func (c *serverConn) collectGarbage() error {
	if err := c.skipInts(1); err != nil { // action
		return err
	}
	if c.hasFeature(featureDeleteDeadSpecificReferrers) {
		tag, err := c.r.u64()
		if err != nil {
			return fmt.Errorf("read gc paths: %w", err)
		}
		if tag == 0 {
			if err := c.skipStrs("paths to delete"); err != nil {
				return err
			}
			if err := c.skipInts(1); err != nil { // deleteReferrers
				return err
			}
		}
	} else if err := c.skipStrs("paths to delete"); err != nil {
		return err
	}
	// ignoreLiveness, maxFreed, three obsolete fields.
	if err := c.skipInts(5); err != nil {
		return err
	}
	return c.refuse("CollectGarbage")
}
