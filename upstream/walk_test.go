package upstream

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/decross-store/decross-store/pathinfo"
)

func TestWalkClosure(t *testing.T) {
	// a -> b, c; b -> d; c -> d, e (not valid); d -> a (a cycle)
	graph := map[string][]string{
		"a": {"b", "c"},
		"b": {"d"},
		"c": {"d", "e"},
		"d": {"a"},
	}
	var mu sync.Mutex
	asked := map[string]int{}
	query := func(_ context.Context, p string) (*pathinfo.PathInfo, error) {
		mu.Lock()
		asked[p]++
		mu.Unlock()
		refs, ok := graph[p]
		if !ok {
			return nil, nil
		}
		return &pathinfo.PathInfo{Path: p, References: refs}, nil
	}
	tests := []struct {
		name      string
		roots     []string
		parallel  int
		stopAt    string
		want      []string
		wantError bool
	}{
		{name: "whole closure, breadth first", roots: []string{"a"}, parallel: 8, want: []string{"a", "b", "c", "d", "e"}},
		{name: "one at a time gives the same order", roots: []string{"a"}, parallel: 1, want: []string{"a", "b", "c", "d", "e"}},
		{name: "roots in the order given, once", roots: []string{"c", "b", "c"}, parallel: 4, want: []string{"c", "b", "d", "e", "a"}},
		{name: "an invalid root is visited", roots: []string{"e"}, parallel: 4, want: []string{"e"}},
		{name: "visit stops the walk", roots: []string{"a"}, parallel: 4, stopAt: "c", want: []string{"a", "b", "c"}, wantError: true},
	}
	stop := errors.New("stop")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clear(asked)
			var got []string
			var invalid []string
			err := WalkClosure(context.Background(), query, tt.roots, tt.parallel, func(p string, info *pathinfo.PathInfo) error {
				got = append(got, p)
				if info == nil {
					invalid = append(invalid, p)
				}
				if p == tt.stopAt {
					return stop
				}
				return nil
			})
			if (err != nil) != tt.wantError || (err != nil && !errors.Is(err, stop)) {
				t.Fatalf("err = %v, want error %v", err, tt.wantError)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("visited %v, want %v", got, tt.want)
			}
			if slices.Contains(got, "e") && !slices.Equal(invalid, []string{"e"}) {
				t.Errorf("visited as invalid %v, want [e]", invalid)
			}
			for p, n := range asked {
				if n != 1 {
					t.Errorf("%s asked for %d times, want once", p, n)
				}
			}
		})
	}
}

func TestWalkClosureQueryError(t *testing.T) {
	broken := errors.New("upstream broke")
	query := func(_ context.Context, p string) (*pathinfo.PathInfo, error) {
		if p == "b" {
			return nil, broken
		}
		return &pathinfo.PathInfo{Path: p, References: []string{"b", "c"}}, nil
	}
	err := WalkClosure(context.Background(), query, []string{"a"}, 4, func(string, *pathinfo.PathInfo) error { return nil })
	if !errors.Is(err, broken) {
		t.Fatalf("err = %v, want the query's error", err)
	}
}
