package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/decross-store/decross-store/daemonproto"
	"github.com/decross-store/decross-store/store"
)

func TestAsInvalidPath(t *testing.T) {
	notServed := fmt.Errorf("path '/nix/store/x' is not valid in this store: a leak: %w", store.ErrNotServed)
	failed := errors.New("upstream: connection refused")
	tests := []struct {
		name    string
		err     error
		invalid bool
	}{
		{"not served", notServed, true},
		{"wrapped not served", fmt.Errorf("query: %w", notServed), true},
		{"upstream failure", failed, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := asInvalidPath(tt.err)
			if errors.Is(got, daemonproto.ErrInvalidPath) != tt.invalid {
				t.Errorf("asInvalidPath(%v) matches ErrInvalidPath: %v, want %v", tt.err, !tt.invalid, tt.invalid)
			}
			if tt.err == nil {
				if got != nil {
					t.Errorf("asInvalidPath(nil) = %v", got)
				}
				return
			}
			if got.Error() != tt.err.Error() || !errors.Is(got, tt.err) {
				t.Errorf("asInvalidPath changed the error: %v", got)
			}
		})
	}
}
