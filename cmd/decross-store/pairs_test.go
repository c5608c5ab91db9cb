package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/decross-store/decross-store/pairing"
)

func TestParsePair(t *testing.T) {
	const c, n = "/nix/store/00000000000000000000000000000000-a=b-1.0", "/nix/store/11111111111111111111111111111111-a-1.0"
	tests := []struct {
		in      string
		want    pairing.UserPair
		wantErr bool
	}{
		// A name may hold "=": the separator is the one before a path.
		{in: c + "=" + n, want: pairing.UserPair{Cross: c, Native: n}},
		{in: c, wantErr: true},
		{in: "=" + n, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parsePair(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parsePair(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestReadPairs(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		roots   []pairing.Root
		users   []pairing.UserPair
		wantErr string
	}{
		{
			name:  "the old format: every entry a root",
			file:  `[{"native": "n.drv", "cross": "c.drv"}]`,
			roots: []pairing.Root{{Native: "n.drv", Cross: "c.drv"}},
		},
		{
			name:  "root false makes an entry a --pair",
			file:  `[{"native": "n.drv", "cross": "c.drv", "root": true}, {"native": "/nix/store/n-x", "cross": "/nix/store/c-x", "root": false}]`,
			roots: []pairing.Root{{Native: "n.drv", Cross: "c.drv"}},
			users: []pairing.UserPair{{Cross: "/nix/store/c-x", Native: "/nix/store/n-x"}},
		},
		{name: "unknown field", file: `[{"native": "n.drv", "cross": "c.drv", "why": 1}]`, wantErr: "unknown field"},
		{name: "half a pair", file: `[{"native": "n.drv", "root": false}]`, wantErr: "pair 0 needs both native and cross"},
		{name: "two lists", file: `[{"native": "n.drv", "cross": "c.drv"}]` + "\n" + `[{"native": "m.drv", "cross": "d.drv"}]`, wantErr: "trailing data after the JSON list"},
		{name: "junk after the list", file: `[{"native": "n.drv", "cross": "c.drv"}] junk`, wantErr: "trailing data after the JSON list"},
		{name: "trailing space", file: "[{\"native\": \"n.drv\", \"cross\": \"c.drv\"}]\n\n", roots: []pairing.Root{{Native: "n.drv", Cross: "c.drv"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "pairs.json")
			if err := os.WriteFile(p, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			roots, users, err := readPairs(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readPairs: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(roots, tt.roots) || !reflect.DeepEqual(users, tt.users) {
				t.Errorf("readPairs = %v, %v, %v; want %v, %v", roots, users, err, tt.roots, tt.users)
			}
		})
	}
}
