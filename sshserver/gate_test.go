package sshserver

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
	srcC = netip.MustParseAddr("192.0.2.3")
)

// granted reports whether t holds a slot, without waiting.
func granted(t *ticket) bool {
	select {
	case <-t.ready:
		return t.granted
	default:
		return false
	}
}

func mustEnter(t *testing.T, g *gate, src netip.Addr, wantQueued bool) *ticket {
	t.Helper()
	tk, queued, err := g.enter(src)
	if err != nil {
		t.Fatalf("enter from %v: %v", src, err)
	}
	if queued != wantQueued {
		t.Fatalf("enter from %v: queued = %v, want %v", src, queued, wantQueued)
	}
	return tk
}

// TestGateServesSourcesInTurn: a freed slot goes to the sources waiting in
// turn, not to the one with the longest queue.
func TestGateServesSourcesInTurn(t *testing.T) {
	g := newGate("slot", 1, 1, 10, 10)
	holder := mustEnter(t, g, srcA, false)
	a1 := mustEnter(t, g, srcA, true)
	a2 := mustEnter(t, g, srcA, true)
	a3 := mustEnter(t, g, srcA, true)
	b1 := mustEnter(t, g, srcB, true)
	c1 := mustEnter(t, g, srcC, true)

	// Each release hands the slot to exactly the next ticket in turn.
	order := []struct {
		name string
		t    *ticket
	}{{"a1", a1}, {"b1", b1}, {"c1", c1}, {"a2", a2}, {"a3", a3}}
	prev := holder
	for _, next := range order {
		if granted(next.t) {
			t.Fatalf("%s granted before the slot was freed", next.name)
		}
		g.release(prev)
		if !granted(next.t) {
			t.Fatalf("slot not given to %s", next.name)
		}
		prev = next.t
	}
	g.release(prev)
	if active, queued, sources := g.counts(); active != 0 || queued != 0 || sources != 0 {
		t.Fatalf("after every release: %d active, %d queued, %d sources remembered; want none", active, queued, sources)
	}
}

// TestGateShares: one source never holds more than its share of slots or
// of the queue; others still get theirs.
func TestGateShares(t *testing.T) {
	g := newGate("slot", 4, 2, 6, 3)
	var held []*ticket
	for range 2 {
		held = append(held, mustEnter(t, g, srcA, false))
	}
	// A's share is taken: it queues although slots are free.
	for range 3 {
		mustEnter(t, g, srcA, true)
	}
	_, _, err := g.enter(srcA)
	if !errors.Is(err, errTooMany) || !strings.Contains(err.Error(), "from 192.0.2.1: 2 in progress and 3 waiting") {
		t.Fatalf("fourth waiter from A: %v, want a per-source refusal", err)
	}
	// B gets the free slots at once, then queues, until the queue is full.
	mustEnter(t, g, srcB, false)
	mustEnter(t, g, srcB, false)
	mustEnter(t, g, srcB, true)
	mustEnter(t, g, srcC, true)
	mustEnter(t, g, srcC, true)
	_, _, err = g.enter(srcC)
	if !errors.Is(err, errTooMany) || !strings.Contains(err.Error(), ": 4 in progress and 6 waiting") {
		t.Fatalf("enter with the queue full: %v, want a refusal", err)
	}
	// A freed slot of A goes to the next waiter that may take it: A's.
	g.release(held[0])
	if active, queued, _ := g.counts(); active != 4 || queued != 5 {
		t.Fatalf("after a release: %d active, %d queued; want 4, 5", active, queued)
	}
}

// TestGateWaitEnds: a waiter leaves the queue at its timeout or when
// stopped, and leaves nothing behind.
func TestGateWaitEnds(t *testing.T) {
	tests := []struct {
		name    string
		stopped bool
		want    string
	}{
		{"timeout", false, "too many connections: no slot free within 1ms; try again later"},
		{"stopped", true, "server shutting down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate("slot", 1, 1, 4, 4)
			holder := mustEnter(t, g, srcA, false)
			w := mustEnter(t, g, srcB, true)
			stop := make(chan struct{})
			timeout := time.Hour
			if tt.stopped {
				close(stop)
			} else {
				timeout = time.Millisecond
			}
			if err := g.wait(w, timeout, stop); err == nil || err.Error() != tt.want {
				t.Fatalf("wait = %v, want %q", err, tt.want)
			}
			if active, queued, sources := g.counts(); active != 1 || queued != 0 || sources != 1 {
				t.Fatalf("after the wait: %d active, %d queued, %d sources; want 1, 0, 1", active, queued, sources)
			}
			g.release(holder)
			if active, _, sources := g.counts(); active != 0 || sources != 0 {
				t.Fatalf("the slot went to a waiter that had left: %d active, %d sources", active, sources)
			}
		})
	}
}

// TestGateWaitGranted: a grant that arrives first wins over the timeout.
func TestGateWaitGranted(t *testing.T) {
	g := newGate("slot", 1, 1, 4, 4)
	holder := mustEnter(t, g, srcA, false)
	w := mustEnter(t, g, srcB, true)
	g.release(holder)
	if err := g.wait(w, time.Hour, nil); err != nil {
		t.Fatalf("wait after the grant: %v", err)
	}
	if active, queued, _ := g.counts(); active != 1 || queued != 0 {
		t.Fatalf("%d active, %d queued; want 1, 0", active, queued)
	}
}

// TestGateFullQueueMakesRoom: a full queue taken by a few addresses does
// not lock another one out: the newest waiter of the address with the
// most waiters gives up its place, and is told why.
func TestGateFullQueueMakesRoom(t *testing.T) {
	g := newGate("slot", 2, 1, 4, 2)
	mustEnter(t, g, srcA, false)
	mustEnter(t, g, srcB, false)
	a1 := mustEnter(t, g, srcA, true)
	a2 := mustEnter(t, g, srcA, true)
	b1 := mustEnter(t, g, srcB, true)
	b2 := mustEnter(t, g, srcB, true)
	// Queue full (4), each of A and B at its share (2): C gets a place.
	c1 := mustEnter(t, g, srcC, true)
	displaced := []*ticket{a2, b2}
	var victim *ticket
	for _, tk := range displaced {
		select {
		case <-tk.ready:
			victim = tk
		default:
		}
	}
	if victim == nil {
		t.Fatal("no waiter gave up its place for the newcomer")
	}
	err := g.wait(victim, time.Hour, nil)
	if !errors.Is(err, errTooMany) || !strings.Contains(err.Error(), "the queue is full") {
		t.Errorf("displaced waiter: %v, want a too-many refusal saying the queue is full", err)
	}
	if _, queued, _ := g.counts(); queued != 4 {
		t.Errorf("%d waiting, want 4", queued)
	}
	for _, tk := range []*ticket{a1, b1, c1} {
		if granted(tk) {
			t.Error("a waiter was granted without a free slot")
		}
	}
	// A source that waits with as many connections as the largest does
	// not displace anyone: C now has one waiter, A and B one or two.
	g2 := newGate("slot", 1, 1, 2, 2)
	mustEnter(t, g2, srcA, false)
	mustEnter(t, g2, srcA, true)
	mustEnter(t, g2, srcB, true)
	if _, _, err := g2.enter(srcC); !errors.Is(err, errTooMany) {
		t.Errorf("enter into a queue shared evenly = %v, want a refusal", err)
	}
}
