package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStore serves paths of known sizes; Prefetch holds each call until
// `parallel` calls are in flight at once (or a deadline passes), so a
// prefetch that never reaches its --jobs fails the test instead of
// passing slowly.
type fakeStore struct {
	sizes    map[string]uint64
	fail     map[string]error
	problems map[string]error
	parallel int

	mu       sync.Mutex
	inFlight int
	maxSeen  int
	reached  chan struct{}
	once     sync.Once
	calls    map[string]int
}

func (f *fakeStore) ValidPaths(context.Context) ([]string, error) {
	var ps []string
	for p := range f.sizes {
		ps = append(ps, p)
	}
	return ps, nil
}

func (f *fakeStore) Prefetch(ctx context.Context, p string) (uint64, error) {
	f.mu.Lock()
	f.calls[p]++
	f.inFlight++
	f.maxSeen = max(f.maxSeen, f.inFlight)
	if f.inFlight >= f.parallel {
		f.once.Do(func() { close(f.reached) })
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	select {
	case <-f.reached:
	case <-time.After(10 * time.Second):
		return 0, errors.New("the expected parallelism was never reached")
	}
	if err := f.fail[p]; err != nil {
		return 0, err
	}
	return f.sizes[p], nil
}

func (f *fakeStore) Problems(context.Context) map[string]error { return f.problems }

type countingProgress struct {
	started, finishedPaths int
	bytes                  uint64
	finished               bool
}

func (c *countingProgress) start(n int)   { c.started = n }
func (c *countingProgress) done(n uint64) { c.finishedPaths++; c.bytes += n }
func (c *countingProgress) finish()       { c.finished = true }

func TestPrefetch(t *testing.T) {
	paths := func(n int) map[string]uint64 {
		m := make(map[string]uint64)
		for i := range n {
			m[fmt.Sprintf("/nix/store/%032d-p%d", i, i)] = uint64(1000 * (i + 1))
		}
		return m
	}
	leaky := "/nix/store/" + strings.Repeat("l", 32) + "-leaky"
	tests := []struct {
		name     string
		paths    int
		jobs     int
		fail     map[string]error
		problems map[string]error
		summary  string
		listed   []string
		verdict  string // "": success
	}{
		{"all good", 10, 3, nil, nil, "prefetched 10 of 10 servable paths (53.7 KiB)", nil, ""},
		{"one job", 4, 1, nil, nil, "prefetched 4 of 4 servable paths (9.8 KiB)", nil, ""},
		{"more jobs than paths", 2, 8, nil, nil, "prefetched 2 of 2 servable paths (2.9 KiB)", nil, ""},
		{"a problem", 3, 2, nil, map[string]error{leaky: fmt.Errorf("path '%s' is not valid in this store: x86_64 bash", leaky)},
			"prefetched 3 of 3 servable paths (5.9 KiB) in 0s with 2 jobs; 0 failed; 1 mapped path cannot be served", []string{"cannot be served: path '" + leaky + "' is not valid in this store: x86_64 bash"},
			"1 mapped path cannot be served (listed above)"},
		{"a failure", 3, 3, map[string]error{fmt.Sprintf("/nix/store/%032d-p1", 1): errors.New("upstream went away")}, nil,
			"prefetched 2 of 3 servable paths (3.9 KiB) in 0s with 3 jobs; 1 failed; 0 mapped paths cannot be served", []string{fmt.Sprintf("failed: /nix/store/%032d-p1: upstream went away", 1)},
			"1 path failed (listed above)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{sizes: paths(tt.paths), fail: tt.fail, problems: tt.problems,
				parallel: min(tt.jobs, tt.paths), reached: make(chan struct{}), calls: map[string]int{}}
			var p countingProgress
			res, err := prefetch(context.Background(), st, tt.jobs, &p)
			if err != nil {
				t.Fatal(err)
			}
			if st.maxSeen != min(tt.jobs, tt.paths) {
				t.Errorf("%d prefetches at once, want %d", st.maxSeen, min(tt.jobs, tt.paths))
			}
			for path := range st.sizes {
				if st.calls[path] != 1 {
					t.Errorf("%s prefetched %d times", path, st.calls[path])
				}
			}
			if p.started != tt.paths || p.finishedPaths != tt.paths {
				t.Errorf("progress: started %d, done %d; want %d", p.started, p.finishedPaths, tt.paths)
			}
			res.elapsed = 0 // for a stable summary
			var out bytes.Buffer
			res.report(&out)
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if !strings.HasPrefix(lines[0], tt.summary) {
				t.Errorf("summary %q, want it to start with %q", lines[0], tt.summary)
			}
			if got := lines[1:]; strings.Join(got, "\n") != strings.Join(tt.listed, "\n") {
				t.Errorf("listed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.listed, "\n"))
			}
			if err := res.err(); err == nil && tt.verdict != "" || err != nil && err.Error() != tt.verdict {
				t.Errorf("verdict %v, want %q", err, tt.verdict)
			}
		})
	}
}

func TestPrefetchInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st := &fakeStore{sizes: map[string]uint64{"/nix/store/a": 1}, parallel: 1, reached: make(chan struct{}), calls: map[string]int{}}
	if _, err := prefetch(ctx, st, 1, &countingProgress{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{50 << 30, "50.0 GiB"}, {1 << 62, "4.0 EiB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
