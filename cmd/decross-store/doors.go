package main

import (
	"context"
	"errors"
	"io"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/pathinfo"
	"github.com/decross-store/decross-store/store"
)

// protoStore is the store as the worker protocol sees it: a path the store
// does not serve (store.ErrNotServed) is a path that is not valid here
// (daemonproto.ErrInvalidPath), answered as absent with the reason.
type protoStore struct{ st *store.Store }

var _ daemonproto.Store = protoStore{}

func (p protoStore) QueryPathInfo(ctx context.Context, path string) (*pathinfo.PathInfo, error) {
	info, err := p.st.QueryPathInfo(ctx, path)
	return info, asInvalidPath(err)
}

func (p protoStore) QueryPathFromHashPart(ctx context.Context, hashPart string) (string, error) {
	path, err := p.st.QueryPathFromHashPart(ctx, hashPart)
	return path, asInvalidPath(err)
}

func (p protoStore) NarFromPath(ctx context.Context, path string) (io.ReadCloser, error) {
	rc, err := p.st.NarFromPath(ctx, path)
	return rc, asInvalidPath(err)
}

func (p protoStore) ValidPaths(ctx context.Context) ([]string, error) {
	paths, err := p.st.ValidPaths(ctx)
	return paths, asInvalidPath(err)
}

func asInvalidPath(err error) error {
	if err != nil && errors.Is(err, store.ErrNotServed) {
		return invalidPathError{err}
	}
	return err
}

// invalidPathError keeps the store's text (which says why) and its chain,
// and also matches daemonproto.ErrInvalidPath.
type invalidPathError struct{ error }

func (e invalidPathError) Unwrap() error        { return e.error }
func (e invalidPathError) Is(target error) bool { return target == daemonproto.ErrInvalidPath }
