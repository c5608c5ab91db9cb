package daemonproto

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// recordedHooks keeps what a Server reported, in order.
type recordedHooks struct {
	mu       sync.Mutex
	requests []string // "op reason", reason "ok" on success
	narBytes int64
}

func (h *recordedHooks) Request(op string, reason Reason) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if reason == "" {
		reason = "ok"
	}
	h.requests = append(h.requests, fmt.Sprintf("%s %s", op, reason))
}

func (h *recordedHooks) NarSent(n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.narBytes += n
}

// TestHooks checks that each kind of request reaches the hooks with its
// name and the reason it failed.
func TestHooks(t *testing.T) {
	tests := []struct {
		name     string
		store    Store
		in       *enc
		want     []string
		narBytes int64
	}{
		{"NarFromPath served", fixtureStore(),
			hello(34).u64(opNarFromPath).str(greetingPath),
			[]string{"Handshake ok", "NarFromPath ok"}, int64(len(greetingNAR))},
		{"path info of an unknown path is an answer", fixtureStore(),
			hello(34).u64(opQueryPathInfo).str(missingPath),
			[]string{"Handshake ok", "QueryPathInfo ok"}, 0},
		{"unknown path before 1.17", fixtureStore(),
			hello(16).u64(opQueryPathInfo).str(missingPath),
			[]string{"Handshake ok", "QueryPathInfo not_served"}, 0},
		{"path the store does not serve", notServedStore{&memStore{}},
			hello(34).u64(opNarFromPath).str(unservedPath).u64(opQueryPathInfo).str(unservedPath),
			[]string{"Handshake ok", "NarFromPath not_served", "QueryPathInfo not_served"}, 0},
		{"derivation to build", fixtureStore(),
			hello(34).u64(opBuildPaths).strs(helloPath + ".drv").u64(0),
			[]string{"Handshake ok", "BuildPaths not_served"}, 0},
		{"store failure", fixtureStore(),
			hello(34).u64(opNarFromPath).str(failingPath).u64(opQueryValidPaths).strs(failingPath).u64(0),
			[]string{"Handshake ok", "NarFromPath upstream", "QueryValidPaths upstream"}, 0},
		{"refused write", fixtureStore(),
			hello(34).u64(opAddSignatures).str(greetingPath).strs("k:sig").u64(opIsValidPath).str(greetingPath),
			[]string{"Handshake ok", "AddSignatures refused_write", "IsValidPath ok"}, 0},
		{"unknown operation", fixtureStore(),
			hello(34).u64(1000),
			[]string{"Handshake ok", "unknown protocol"}, 0},
		{"malformed store path", fixtureStore(),
			hello(34).u64(opQueryPathInfo).str("/nix/store/x"),
			[]string{"Handshake ok", "QueryPathInfo protocol"}, 0},
		{"bad magic", fixtureStore(),
			(&enc{}).u64(1, v(34)),
			[]string{"Handshake protocol"}, 0},
		{"request cut short", fixtureStore(),
			hello(34).u64(opQueryPathInfo),
			[]string{"Handshake ok", "QueryPathInfo io"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &recordedHooks{}
			srv := &Server{Store: tt.store, Hooks: h}
			var out bytes.Buffer
			// The result is not what this test is about: several cases end
			// with an error by design.
			_ = srv.ServeConn(context.Background(), stdio{bytes.NewReader(tt.in.Bytes()), &out})
			if !slices.Equal(h.requests, tt.want) {
				t.Errorf("requests = %q, want %q", h.requests, tt.want)
			}
			if h.narBytes != tt.narBytes {
				t.Errorf("NAR bytes = %d, want %d", h.narBytes, tt.narBytes)
			}
		})
	}
}

// TestHooksKeepStoreErrors checks that marking the store's errors changes
// nothing a client sees: the message is the store's.
func TestHooksKeepStoreErrors(t *testing.T) {
	in := hello(34).u64(opNarFromPath).str(failingPath).Bytes()
	plain, _ := serve(fixtureStore(), in)
	var hooked bytes.Buffer
	srv := &Server{Store: fixtureStore(), NixVersion: "decross-store 0.1", Hooks: &recordedHooks{}}
	if err := srv.ServeConn(context.Background(), stdio{bytes.NewReader(in), &hooked}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, hooked.Bytes()) {
		t.Errorf("with hooks the server sent\n%s\nwithout\n%s", words(hooked.Bytes()), words(plain))
	}
}
