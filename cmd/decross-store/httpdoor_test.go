package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Requests beyond the limit wait for a slot.
func TestLimitRequests(t *testing.T) {
	inside := make(chan struct{}, 4)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
	})
	srv := httptest.NewServer(limitRequests(h, 1))
	defer srv.Close()
	first := make(chan error, 1)
	go func() {
		resp, err := http.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-inside
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a second request got in while the only slot was taken")
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL) // the slot is free again
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
