package sshserver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// gate hands out a fixed number of slots. A caller that finds none free
// waits in a bounded queue instead of being turned away, and a freed slot
// goes to the sources that wait in turn, so that a source with a long queue
// (one address flooding the server) cannot starve one that queued a single
// connection. A source may hold at most perSource slots and perSourceQueue
// places in the queue, which keeps the rest for everyone else.
//
// Memory is bounded by slots and queue: a source is only remembered while
// it holds a slot or waits for one.
type gate struct {
	what                  string // "handshake slot", for refusals
	slots, perSource      int
	queue, perSourceQueue int
	mu                    sync.Mutex
	active, queued        int
	sources               map[netip.Addr]*source
	turn                  []*source // sources with waiters, next to serve first
}

type source struct {
	addr    netip.Addr
	active  int
	waiters []*ticket
}

// ticket is one caller's place: admitted at once, or in the queue until
// ready is closed.
type ticket struct {
	src     *source
	ready   chan struct{} // closed when granted, or displaced
	granted bool          // guarded by gate.mu
	err     error         // guarded by gate.mu: why it was displaced
}

func newGate(what string, slots, perSource, queue, perSourceQueue int) *gate {
	return &gate{
		what:           what,
		slots:          slots,
		perSource:      min(perSource, slots),
		queue:          queue,
		perSourceQueue: min(perSourceQueue, queue),
		sources:        make(map[netip.Addr]*source),
	}
}

// The reasons enter and wait give wrap these; their text is meant for
// the client.
var (
	errTooMany = errors.New("too many connections")
	errStopped = errors.New("server shutting down")
)

// enter takes a slot for addr, or else a place in the queue (queued),
// whose ticket wait then redeems. It never blocks; a full queue is an
// error.
func (g *gate) enter(addr netip.Addr) (t *ticket, queued bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	src := g.sources[addr]
	if src == nil {
		src = &source{addr: addr}
		g.sources[addr] = src
	}
	t = &ticket{src: src, ready: make(chan struct{})}
	// Whenever a slot is free, no waiter can take it (dispatch would have
	// given it away), so a newcomer passes nobody by taking it.
	if g.active < g.slots && src.active < g.perSource {
		g.grantLocked(t)
		return t, false, nil
	}
	switch {
	case len(src.waiters) >= g.perSourceQueue:
		g.forgetLocked(src)
		return nil, false, fmt.Errorf("%w from %s: %d in progress and %d waiting; try again later",
			errTooMany, sourceString(addr), src.active, len(src.waiters))
	case g.queued >= g.queue && !g.displaceLocked(src):
		g.forgetLocked(src)
		return nil, false, fmt.Errorf("%w: %d in progress and %d waiting; try again later", errTooMany, g.active, g.queued)
	}
	if len(src.waiters) == 0 {
		g.turn = append(g.turn, src)
	}
	src.waiters = append(src.waiters, t)
	g.queued++
	return t, true, nil
}

// displaceLocked makes room in a full queue for a newcomer from src by
// turning away the newest waiter of the source with the most waiters, if
// that source waits with more connections than src does. Otherwise a few
// addresses filling the queue (with connections that may well have hung
// up already, since nothing is read from a waiting connection) would lock
// every other address out.
func (g *gate) displaceLocked(src *source) bool {
	var victim *source
	for _, s := range g.turn {
		if victim == nil || len(s.waiters) > len(victim.waiters) {
			victim = s
		}
	}
	if victim == nil || len(victim.waiters) <= len(src.waiters)+1 {
		return false
	}
	t := victim.waiters[len(victim.waiters)-1]
	victim.waiters = victim.waiters[:len(victim.waiters)-1]
	g.queued--
	t.err = fmt.Errorf("%w from %s: the queue is full and other addresses wait too; try again later", errTooMany, sourceString(victim.addr))
	close(t.ready)
	return true
}

// wait blocks until t is granted, timeout passes, or stop is closed; a
// grant that races with either still counts.
func (g *gate) wait(t *ticket, timeout time.Duration, stop <-chan struct{}) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case <-t.ready:
		g.mu.Lock()
		defer g.mu.Unlock()
		if t.granted {
			return nil
		}
		g.forgetLocked(t.src)
		return t.err // displaced: already out of the queue
	case <-timer.C:
		err = fmt.Errorf("%w: no %s free within %v; try again later", errTooMany, g.what, timeout)
	case <-stop:
		err = errStopped
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.granted {
		return nil
	}
	src := t.src
	src.waiters = slices.DeleteFunc(src.waiters, func(w *ticket) bool { return w == t })
	g.queued--
	if len(src.waiters) == 0 {
		g.turn = slices.DeleteFunc(g.turn, func(s *source) bool { return s == src })
	}
	g.forgetLocked(src)
	return err
}

// release gives back a granted ticket's slot, to the next waiter if any.
func (g *gate) release(t *ticket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	t.src.active--
	g.forgetLocked(t.src)
	g.dispatchLocked()
}

// dispatchLocked fills free slots from the queue, one source at a time in
// turn; a source that got one goes to the back of the line.
func (g *gate) dispatchLocked() {
	for g.active < g.slots {
		i := slices.IndexFunc(g.turn, func(s *source) bool { return s.active < g.perSource })
		if i < 0 {
			return
		}
		src := g.turn[i]
		t := src.waiters[0]
		src.waiters = slices.Delete(src.waiters, 0, 1)
		g.queued--
		g.turn = slices.Delete(g.turn, i, i+1)
		if len(src.waiters) > 0 {
			g.turn = append(g.turn, src)
		}
		g.grantLocked(t)
		close(t.ready)
	}
}

func (g *gate) grantLocked(t *ticket) {
	t.granted = true
	g.active++
	t.src.active++
}

func (g *gate) forgetLocked(src *source) {
	if src.active == 0 && len(src.waiters) == 0 {
		delete(g.sources, src.addr)
	}
}

// counts reports slots in use, waiters and the sources remembered.
func (g *gate) counts() (active, queued, sources int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active, g.queued, len(g.sources)
}

// sourceString names what clientNetwork made of a remote address.
func sourceString(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "this address"
	case a.Is6():
		return a.String() + "/64"
	}
	return a.String()
}
