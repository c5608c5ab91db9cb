package daemonproto

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/decross-store/decross-store/pathinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"golang.org/x/sync/errgroup"
)

func (c *serverConn) dispatch(ctx context.Context, op uint64) error {
	switch op {
	case opIsValidPath:
		return c.isValidPath(ctx)
	case opQueryPathInfo:
		return c.queryPathInfo(ctx)
	case opNarFromPath:
		return c.narFromPath(ctx)
	case opQueryValidPaths:
		return c.queryValidPaths(ctx)
	case opQueryPathFromHashPart:
		return c.queryPathFromHashPart(ctx)
	case opQueryMissing:
		return c.queryMissing(ctx)
	case opBuildPaths:
		return c.buildPaths(ctx)
	case opBuildPathsWithResults:
		return c.buildPathsWithResults(ctx)
	case opSetOptions:
		return c.setOptions()
	case opEnsurePath:
		return c.ensurePath(ctx)
	case opQueryDeriver, opQueryPathHash, opQueryReferences:
		return c.queryInfoField(ctx, op)
	case opQueryAllValidPaths:
		return c.queryAllValidPaths(ctx)
	case opHasSubstitutes:
		return c.pathThen(func() { c.w.boolean(false) })
	case opQueryReferrers, opQueryValidDerivers, opQueryDerivationOutputs,
		opQueryDerivationOutputNames, opQueryDerivationOutputMap,
		opQuerySubstitutablePathInfo:
		// This store serves no derivations and has no substituters, so all
		// of these are an empty list (or "not found", encoded alike).
		return c.pathThen(func() { c.w.u64(0) })
	case opAddTempRoot:
		return c.pathThen(func() { c.w.u64(1) })
	case opAddIndirectRoot:
		// A symlink somewhere on the client's machine, not a store path.
		if err := c.skipStr("indirect root"); err != nil {
			return err
		}
		c.last()
		c.w.u64(1)
		return nil
	case opSyncWithGC, opOptimiseStore:
		// Nothing is ever collected here, and there are no local files to
		// deduplicate, so both succeed without doing anything.
		c.last()
		c.w.u64(1)
		return nil
	case opFindRoots:
		c.last()
		c.w.u64(0)
		return nil
	case opQuerySubstitutablePaths:
		if _, err := c.readStorePaths(); err != nil {
			return err
		}
		c.last()
		c.w.u64(0)
		return nil
	case opQuerySubstitutablePathInfos:
		return c.querySubstitutablePathInfos()
	case opQueryRealisation:
		if err := c.r.skipStr("drv output id", maxShortLen); err != nil {
			return fmt.Errorf("read drv output id: %w", err)
		}
		c.last()
		c.w.u64(0) // empty set, in both the <1.31 and the JSON layout
		return nil

	case opAddToStore:
		return c.addToStore()
	case opAddTextToStore:
		return c.addTextToStore()
	case opAddToStoreNar:
		return c.addToStoreNar()
	case opAddMultipleToStore:
		return c.addMultipleToStore()
	case opBuildDerivation:
		return c.buildDerivation()
	case opAddSignatures:
		if err := c.skipStr("store path"); err != nil {
			return err
		}
		if err := c.skipStrs("signatures"); err != nil {
			return err
		}
		return c.refuse("AddSignatures")
	case opCollectGarbage:
		return c.collectGarbage()
	case opAddBuildLog:
		if err := c.skipStr("derivation name"); err != nil {
			return err
		}
		if err := c.skipFramed(); err != nil {
			return err
		}
		return c.refuse("AddBuildLog")
	case opRegisterDrvOutput:
		if !c.atLeast(31) {
			if err := c.skipStr("drv output id"); err != nil {
				return err
			}
			if err := c.skipStr("output path"); err != nil {
				return err
			}
		} else if err := c.skipStr("realisation"); err != nil {
			return err
		}
		return c.refuse("RegisterDrvOutput")
	case opVerifyStore:
		// Verifying would mean re-hashing every NAR this store can build;
		// refuse rather than claim a check that never happened.
		if err := c.skipInts(2); err != nil {
			return err
		}
		return c.refuse("VerifyStore")
	case opAddPermRoot:
		if !c.atLeast(36) {
			break
		}
		if err := c.skipStr("store path"); err != nil {
			return err
		}
		if err := c.skipStr("gc root"); err != nil {
			return err
		}
		return c.refuse("AddPermRoot")
	}
	// The arguments of an unknown op cannot be skipped.
	return malformed("invalid operation %d", op)
}

// pathThen reads one store path and sends a fixed reply.
func (c *serverConn) pathThen(reply func()) error {
	if _, err := c.readStorePath(); err != nil {
		return err
	}
	c.last()
	reply()
	return nil
}

func (c *serverConn) queryInfo(ctx context.Context, p string) (*pathinfo.PathInfo, error) {
	info, err := c.srv.Store.QueryPathInfo(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("query path info %s: %w", p, err)
	}
	return info, nil
}

// validInfo is queryInfo for questions of validity: a path the store
// reports as not valid (an error matching ErrInvalidPath) is absent, not a
// failure of the whole request; whyNot keeps the store's reason.
func (c *serverConn) validInfo(ctx context.Context, p string) (info *pathinfo.PathInfo, whyNot, err error) {
	info, err = c.srv.Store.QueryPathInfo(ctx, p)
	if errors.Is(err, ErrInvalidPath) {
		c.log.Debug("path not valid", "path", p, "reason", err)
		return nil, err, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("query path info %s: %w", p, err)
	}
	return info, nil, nil
}

// batchQueries bounds the path info queries one batch request (QueryValidPaths,
// QueryMissing) runs at once. On a cold store each query may wait for a
// rewrite; running them together lets the store prepare the batch in
// parallel (it bounds the rewrites itself).
const batchQueries = 16

// validPaths reports which of paths are valid.
func (c *serverConn) validPaths(ctx context.Context, paths []string) ([]bool, error) {
	ok := make([]bool, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(batchQueries)
	for i, p := range paths {
		g.Go(func() error {
			info, _, err := c.validInfo(gctx, p)
			ok[i] = info != nil
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return ok, nil
}

func (c *serverConn) isValidPath(ctx context.Context) error {
	p, err := c.readStorePath()
	if err != nil {
		return err
	}
	info, _, err := c.validInfo(ctx, p)
	if err != nil {
		return c.opFailed("IsValidPath", err)
	}
	c.last()
	c.w.boolean(info != nil)
	return nil
}

func (c *serverConn) queryPathInfo(ctx context.Context) error {
	p, err := c.readStorePath()
	if err != nil {
		return err
	}
	info, err := c.queryInfo(ctx, p)
	if err != nil {
		return c.opFailed("QueryPathInfo", err)
	}
	if info == nil {
		if !c.atLeast(17) {
			// Before the valid flag existed, clients expected this error text.
			return c.opFailed("QueryPathInfo", fmt.Errorf("path '%s' is not valid", p))
		}
		c.last()
		c.w.boolean(false)
		return nil
	}
	c.last()
	if c.atLeast(17) {
		c.w.boolean(true)
	}
	c.writePathInfo(info)
	return nil
}

// writePathInfo sends the part of a ValidPathInfo that follows the path.
func (c *serverConn) writePathInfo(info *pathinfo.PathInfo) {
	c.w.str(info.Deriver)
	c.w.str(info.NarHash.Hex())
	refs := slices.Clone(info.References)
	slices.Sort(refs)
	c.w.strs(refs)
	c.w.u64(uint64(info.RegistrationTime))
	c.w.u64(info.NarSize)
	if c.atLeast(16) {
		c.w.boolean(info.Ultimate)
		c.w.strs(info.Sigs)
		c.w.str(info.CA)
	}
}

func (c *serverConn) narFromPath(ctx context.Context) error {
	p, err := c.readStorePath()
	if err != nil {
		return err
	}
	rc, err := c.srv.Store.NarFromPath(ctx, p)
	if err != nil {
		return c.opFailed("NarFromPath", fmt.Errorf("nar from path %s: %w", p, err))
	}
	defer rc.Close()
	c.last()
	// Once LAST is out the client expects exactly one NAR; a failure now
	// can only be signalled by hanging up.
	n, err := c.w.w.ReadFrom(rc)
	c.narSent(n)
	if err != nil {
		return fmt.Errorf("send nar of %s: %w", p, err)
	}
	return nil
}

func (c *serverConn) queryValidPaths(ctx context.Context) error {
	paths, err := c.readStorePaths()
	if err != nil {
		return err
	}
	if c.atLeast(27) {
		if _, err := c.r.u64(); err != nil { // substitute: there are no substituters
			return fmt.Errorf("read substitute flag: %w", err)
		}
	}
	ok, err := c.validPaths(ctx, paths)
	if err != nil {
		return c.opFailed("QueryValidPaths", err)
	}
	var valid []string
	for i, p := range paths {
		if ok[i] {
			valid = append(valid, p)
		}
	}
	slices.Sort(valid)
	c.last()
	c.w.strs(slices.Compact(valid))
	return nil
}

func (c *serverConn) queryPathFromHashPart(ctx context.Context) error {
	h, err := c.readStr("hash part", maxStorePathLen)
	if err != nil {
		return err
	}
	var p string
	// Anything but a 32-character nixbase32 hash cannot name a path.
	if len(h) == 32 && nixbase32.ValidateString(h) == nil {
		p, err = c.srv.Store.QueryPathFromHashPart(ctx, h)
		if err != nil {
			return c.opFailed("QueryPathFromHashPart", fmt.Errorf("query path from hash part %s: %w", h, err))
		}
	}
	c.last()
	c.w.str(p)
	return nil
}

func (c *serverConn) queryAllValidPaths(ctx context.Context) error {
	paths, err := c.srv.Store.ValidPaths(ctx)
	if err != nil {
		return c.opFailed("QueryAllValidPaths", fmt.Errorf("list valid paths: %w", err))
	}
	paths = slices.Clone(paths)
	slices.Sort(paths)
	c.last()
	c.w.strs(slices.Compact(paths))
	return nil
}

func (c *serverConn) ensurePath(ctx context.Context) error {
	p, err := c.readStorePath()
	if err != nil {
		return err
	}
	info, err := c.queryInfo(ctx, p)
	if err != nil {
		return c.opFailed("EnsurePath", err)
	}
	if info == nil {
		return c.opFailed("EnsurePath", fmt.Errorf("path '%s' does not exist and cannot be created", p))
	}
	c.last()
	c.w.u64(1)
	return nil
}

// queryInfoField answers the old single-field queries from the path info.
func (c *serverConn) queryInfoField(ctx context.Context, op uint64) error {
	p, err := c.readStorePath()
	if err != nil {
		return err
	}
	info, err := c.queryInfo(ctx, p)
	if err == nil && info == nil {
		err = fmt.Errorf("path '%s' is not valid", p)
	}
	if err != nil {
		return c.opFailed("QueryPathInfo", err)
	}
	c.last()
	switch op {
	case opQueryDeriver:
		c.w.str(info.Deriver)
	case opQueryPathHash:
		c.w.str(info.NarHash.Hex())
	case opQueryReferences:
		refs := slices.Clone(info.References)
		slices.Sort(refs)
		c.w.strs(refs)
	}
	return nil
}

func (c *serverConn) querySubstitutablePathInfos() error {
	if c.atLeast(22) {
		n, err := c.r.count("path to content-address map", c.lim.list)
		if err != nil {
			return fmt.Errorf("read paths: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			if _, err := c.readStorePath(); err != nil {
				return err
			}
			if err := c.r.skipStr("content address", maxShortLen); err != nil {
				return fmt.Errorf("read content address: %w", err)
			}
		}
	} else if _, err := c.readStorePaths(); err != nil {
		return err
	}
	c.last()
	c.w.u64(0)
	return nil
}

// readDerived reads the derived paths of BuildPaths, BuildPathsWithResults
// and QueryMissing. Before 1.30 a bare .drv path meant "build it".
func (c *serverConn) readDerived() ([]derivedPath, error) {
	ds, err := c.readDerivedPaths()
	if err != nil {
		return nil, err
	}
	if !c.atLeast(30) {
		for i := range ds {
			if len(ds[i].path) > 4 && ds[i].path[len(ds[i].path)-4:] == ".drv" {
				ds[i].drv = true
			}
		}
	}
	return ds, nil
}

// validOpaque reports whether d is an opaque path valid in the store, and
// if not, why (nil when the store gave no reason).
func (c *serverConn) validOpaque(ctx context.Context, d derivedPath) (ok bool, whyNot, err error) {
	if d.drv {
		return false, nil, nil
	}
	info, whyNot, err := c.validInfo(ctx, d.path)
	return info != nil, whyNot, err
}

func (c *serverConn) queryMissing(ctx context.Context) error {
	ds, err := c.readDerived()
	if err != nil {
		return err
	}
	var opaque, unknown []string
	for _, d := range ds {
		if d.drv {
			unknown = append(unknown, d.path)
		} else {
			opaque = append(opaque, d.path)
		}
	}
	ok, err := c.validPaths(ctx, opaque)
	if err != nil {
		return c.opFailed("QueryMissing", err)
	}
	for i, p := range opaque {
		if !ok[i] {
			unknown = append(unknown, p)
		}
	}
	slices.Sort(unknown)
	c.last()
	c.w.u64(0) // willBuild
	c.w.u64(0) // willSubstitute
	c.w.strs(slices.Compact(unknown))
	c.w.u64(0) // downloadSize
	c.w.u64(0) // narSize
	return nil
}

func unbuildable(d derivedPath, whyNot error) error {
	if whyNot != nil {
		return whyNot
	}
	if d.drv {
		return fmt.Errorf("cannot build '%s': decross-store serves no derivations", d.raw)
	}
	return fmt.Errorf("path '%s' is required, but there is no substituter that can build it", d.path)
}

func (c *serverConn) buildPaths(ctx context.Context) error {
	ds, err := c.readDerived()
	if err != nil {
		return err
	}
	if c.atLeast(15) {
		if _, err := c.r.u64(); err != nil { // build mode
			return fmt.Errorf("read build mode: %w", err)
		}
	}
	for _, d := range ds {
		ok, whyNot, err := c.validOpaque(ctx, d)
		if err != nil {
			return c.opFailed("BuildPaths", err)
		}
		if !ok {
			return c.opFailed("BuildPaths", unbuildable(d, whyNot))
		}
	}
	c.last()
	c.w.u64(1)
	return nil
}

func (c *serverConn) buildPathsWithResults(ctx context.Context) error {
	ds, err := c.readDerived()
	if err != nil {
		return err
	}
	if _, err := c.r.u64(); err != nil { // build mode
		return fmt.Errorf("read build mode: %w", err)
	}
	// The answers are collected before any is sent (an upstream failure
	// must still be reportable as an error), but their messages are only
	// formatted while writing, so a long list does not hold them all.
	type result struct {
		valid  bool
		whyNot error
	}
	results := make([]result, len(ds))
	for i, d := range ds {
		ok, whyNot, err := c.validOpaque(ctx, d)
		if err != nil {
			return c.opFailed("BuildPathsWithResults", err)
		}
		results[i] = result{ok, whyNot}
	}
	c.last()
	c.w.u64(uint64(len(ds)))
	for i, d := range ds {
		c.w.str(d.raw)
		if results[i].valid {
			c.writeBuildResult(buildStatusAlreadyValid, "")
		} else {
			c.writeBuildResult(buildStatusNoSubstituters, unbuildable(d, results[i].whyNot).Error())
		}
	}
	return nil
}

// writeBuildResult sends a BuildResult with nothing built: no times, no
// outputs. Its layout grows at 1.28, 1.29 and 1.37.
func (c *serverConn) writeBuildResult(status uint64, msg string) {
	c.w.u64(status)
	c.w.str(msg)
	if c.atLeast(29) {
		c.w.u64(0) // timesBuilt
		c.w.u64(0) // isNonDeterministic
		c.w.u64(0) // startTime
		c.w.u64(0) // stopTime
	}
	if c.atLeast(37) {
		c.w.u64(0) // cpuUser: none
		c.w.u64(0) // cpuSystem: none
	}
	if c.atLeast(28) {
		c.w.u64(0) // builtOutputs
	}
}

func (c *serverConn) setOptions() error {
	if err := c.skipInts(12); err != nil {
		return err
	}
	if c.atLeast(12) {
		n, err := c.r.count("option overrides", c.lim.list)
		if err != nil {
			return fmt.Errorf("read option overrides: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			if err := c.skipStr("option name"); err != nil {
				return err
			}
			if err := c.skipStr("option value"); err != nil {
				return err
			}
		}
	}
	c.last()
	return nil
}
