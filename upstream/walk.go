package upstream

import (
	"context"
	"errors"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/decross-store/decross-store/pathinfo"
)

// Reader is what decross-store reads cross builds from: a nix-daemon, or
// a binary cache. QueryPathInfo returns (nil, nil) for a path that is not
// valid (not built). NarFromPath returns the NAR of a valid path.
type Reader interface {
	QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error)
	NarFromPath(ctx context.Context, path string) (io.ReadCloser, error)
}

// ErrUnusable is matched by a Reader's errors about one path that is
// there but must not be used: a binary cache's narinfo that no trusted key
// signed, or one whose content does not match it. A store reports such a
// path as not served, with the error as the reason, rather than as a
// failing upstream.
var ErrUnusable = errors.New("upstream path unusable")

// QueryFunc looks up the path info of one path, nil when it is not valid.
type QueryFunc func(ctx context.Context, path string) (*pathinfo.PathInfo, error)

// WalkClosure visits every path of the closure of roots once, breadth
// first, in an order that depends only on the graph: roots in the order
// given, then references in the order their referrers list them. visit
// gets nil info for a path that is not valid (which has no references to
// follow); an error from visit or query stops the walk and is returned as
// it is.
//
// The path infos of a level of the walk are asked for concurrently, up to
// parallel at once: on a cold start, asking one at a time would cost a
// round trip per path of the closure.
func WalkClosure(ctx context.Context, query QueryFunc, roots []string, parallel int, visit func(path string, info *pathinfo.PathInfo) error) error {
	seen := make(map[string]bool, len(roots))
	var queue []string
	for _, r := range roots {
		if !seen[r] {
			seen[r] = true
			queue = append(queue, r)
		}
	}
	infos := make(map[string]*pathinfo.PathInfo)
	fetched := 0 // queue[:fetched] have been asked for
	for i := 0; i < len(queue); i++ {
		if i == fetched {
			level := queue[fetched:]
			got := make([]*pathinfo.PathInfo, len(level))
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(max(1, parallel))
			for j, p := range level {
				g.Go(func() error {
					info, err := query(gctx, p)
					got[j] = info
					return err
				})
			}
			if err := g.Wait(); err != nil {
				return err
			}
			for j, p := range level {
				infos[p] = got[j]
			}
			fetched = len(queue)
		}
		p := queue[i]
		info := infos[p]
		delete(infos, p)
		if err := visit(p, info); err != nil {
			return err
		}
		if info == nil {
			continue
		}
		for _, r := range info.References {
			if !seen[r] {
				seen[r] = true
				queue = append(queue, r)
			}
		}
	}
	return nil
}
