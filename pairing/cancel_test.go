package pairing

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// wideSource serves a root with many inputs and cancels the walk after a
// number of reads, while other reads are still in flight.
type wideSource struct {
	inputs int
	reads  atomic.Int64
	after  int64
	cancel context.CancelFunc
}

func (w *wideSource) ReadDerivation(_ context.Context, p string) (*derivation.Derivation, error) {
	if w.reads.Add(1) == w.after {
		w.cancel()
	}
	d := &derivation.Derivation{InputDerivations: map[string][]string{}}
	if p == wideRoot {
		for i := range w.inputs {
			d.InputDerivations[fmt.Sprintf("/nix/store/%032d-in-%d.drv", i, i)] = []string{"out"}
		}
	}
	return d, nil
}

const wideRoot = "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-root.drv"

// TestLoadGraphCancelledMidWalk cancels at many points of a wide walk:
// LoadGraph must return the cancellation, never hang on workers holding
// results nobody reads.
func TestLoadGraphCancelledMidWalk(t *testing.T) {
	for after := int64(1); after <= 500; after += 1 {
		ctx, cancel := context.WithCancel(context.Background())
		src := &wideSource{inputs: 500, after: after, cancel: cancel}
		done := make(chan error, 1)
		go func() {
			_, err := LoadGraph(ctx, src, wideRoot)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancel after %d reads: err = %v, want context.Canceled", after, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cancel after %d reads: LoadGraph hung", after)
		}
		cancel()
	}
}
