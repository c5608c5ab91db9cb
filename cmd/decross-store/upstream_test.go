package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

func TestUpstreamFlags(t *testing.T) {
	_, k1, err := signature.GenerateKeypair("cache-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, k2, err := signature.GenerateKeypair("cache-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		keys    []string
		wantErr string
	}{
		{"daemon by default", nil, nil, ""},
		{"repeated", []string{"--trusted-public-key", k1.String(), "--trusted-public-key", k2.String()}, []string{"cache-1", "cache-2"}, ""},
		{"space separated, as in nix.conf", []string{"--trusted-public-key", k1.String() + "  " + k2.String()}, []string{"cache-1", "cache-2"}, ""},
		{"not a key", []string{"--trusted-public-key", "cache-1:notbase64!"}, nil, `public key "cache-1:notbase64!"`},
		{"empty", []string{"--trusted-public-key", " "}, nil, "no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var u upstreamFlags
			u.register(fs)
			err := fs.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, k := range u.trustedKeys {
				names = append(names, k.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.keys, ",") {
				t.Errorf("keys %v, want %v", names, tt.keys)
			}
		})
	}
}

// Keys and signature settings mean nothing to a nix-daemon upstream,
// which checks its own: a mistake to point out, not to ignore.
func TestUpstreamFlagsDaemonRefusesKeys(t *testing.T) {
	u := upstreamFlags{addr: "daemon", noCheckSigs: true}
	if _, _, err := u.open(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "binary-cache upstreams") {
		t.Fatalf("open = %v, want a refusal naming binary-cache upstreams", err)
	}
}

func TestIsBinaryCache(t *testing.T) {
	for addr, want := range map[string]bool{
		"daemon": false, "unix:///run/nix/socket": false,
		"file:///srv/cache": true, "http://cache:8080": true, "https://cache.example.org": true,
		"s3://bucket?endpoint=http://127.0.0.1:7070&region=us-east-1": true,
	} {
		if got := isBinaryCache(addr); got != want {
			t.Errorf("isBinaryCache(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Opening a binary-cache upstream that never answers ends when the
// command's context does (Ctrl-C), not after every retry has timed out.
func TestUpstreamOpenHonoursCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	u := upstreamFlags{addr: srv.URL, noCheckSigs: true}
	done := make(chan error, 1)
	go func() {
		_, _, err := u.open(ctx, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("open = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("open did not return after its context was cancelled")
	}
}
