package daemonproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestWireWriter(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *wireWriter)
		want  string
	}{
		{"int", func(w *wireWriter) { w.u64(0x122) }, "2201000000000000"},
		{"true", func(w *wireWriter) { w.boolean(true) }, "0100000000000000"},
		{"false", func(w *wireWriter) { w.boolean(false) }, "0000000000000000"},
		{"empty string", func(w *wireWriter) { w.str("") }, "0000000000000000"},
		{"padded string", func(w *wireWriter) { w.str("2.8.0") }, "0500000000000000 322e382e30000000"},
		{"aligned string", func(w *wireWriter) { w.str("contents") }, "0800000000000000 636f6e74656e7473"},
		{"list", func(w *wireWriter) { w.strs([]string{"a", "bc"}) },
			"0200000000000000 0100000000000000 6100000000000000 0200000000000000 6263000000000000"},
		{"empty list", func(w *wireWriter) { w.strs(nil) }, "0000000000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := &wireWriter{w: bufio.NewWriter(&buf)}
			tt.write(w)
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			if want := hexWords(t, tt.want); !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("wrote %s, want %s", words(buf.Bytes()), words(want))
			}
		})
	}
}

func TestWireReader(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		read      func(r *wireReader) (any, error)
		want      any
		malformed bool // the error must be a protocol violation
		eof       bool // the error must be an unexpected EOF
	}{
		{"int", "2201000000000000", func(r *wireReader) (any, error) { return r.u64() }, uint64(0x122), false, false},
		{"bool is lenient like Nix", "0700000000000000", func(r *wireReader) (any, error) { return r.boolean() }, true, false, false},
		{"string", "0500000000000000 322e382e30000000",
			func(r *wireReader) (any, error) { return r.str("s", 16) }, "2.8.0", false, false},
		{"string at its cap", "0500000000000000 322e382e30000000",
			func(r *wireReader) (any, error) { return r.str("s", 5) }, "2.8.0", false, false},
		{"string over its cap", "0600000000000000 322e382e30310000",
			func(r *wireReader) (any, error) { return r.str("s", 5) }, "", true, false},
		{"huge length", "0000000000000010",
			func(r *wireReader) (any, error) { return r.str("s", 1<<20) }, "", true, false},
		{"non-zero padding", "0500000000000000 322e382e30000100",
			func(r *wireReader) (any, error) { return r.str("s", 16) }, "", true, false},
		{"truncated int", "220100", func(r *wireReader) (any, error) { return r.u64() }, uint64(0), false, true},
		{"truncated string", "0500000000000000 322e",
			func(r *wireReader) (any, error) { return r.str("s", 16) }, "", false, true},
		{"truncated padding", "0500000000000000 322e382e3000",
			func(r *wireReader) (any, error) { return r.str("s", 16) }, "", false, true},
		{"skip string", "0300000000000000 6162630000000000 0100000000000000",
			func(r *wireReader) (any, error) {
				if err := r.skipStr("s", 3); err != nil {
					return nil, err
				}
				return r.u64()
			}, uint64(1), false, false},
		{"list over its cap", "0000000000000001",
			func(r *wireReader) (any, error) { return nil, r.skipStrs("l", 1<<20, 10) }, nil, true, false},
		{"frames", "0300000000000000 616263 0100000000000000 64 0000000000000000 0900000000000000",
			func(r *wireReader) (any, error) {
				if err := r.skipFramed(8); err != nil {
					return nil, err
				}
				return r.u64()
			}, uint64(9), false, false},
		{"frame over its cap", "0900000000000000",
			func(r *wireReader) (any, error) { return nil, r.skipFramed(8) }, nil, true, false},
		{"framed reader", "0300000000000000 616263 0100000000000000 64 0000000000000000",
			func(r *wireReader) (any, error) {
				b, err := io.ReadAll(&framedReader{r: r, maxFrame: 8})
				return string(b), err
			}, "abcd", false, false},
		{"nar token", "0d00000000000000 6e69782d61726368 6976652d31000000",
			func(r *wireReader) (any, error) { return nil, r.expect("nix-archive-1") }, nil, false, false},
		{"wrong nar token", "0100000000000000 2900000000000000",
			func(r *wireReader) (any, error) { return nil, r.expect("(") }, nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := hexWords(t, tt.in)
			r := &wireReader{r: bufio.NewReader(bytes.NewReader(in))}
			got, err := tt.read(r)
			switch {
			case tt.malformed:
				if !IsMalformed(err) {
					t.Fatalf("error %v, want a protocol violation", err)
				}
			case tt.eof:
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error %v, want unexpected EOF", err)
				}
			case err != nil:
				t.Fatal(err)
			case got != tt.want:
				t.Fatalf("read %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestCheckStorePath(t *testing.T) {
	good := []string{greetingPath, helloPath, "/nix/store/00000000000000000000000000000000-a+b=c?d_e.f-g"}
	bad := []string{
		"", "/tmp/foo", "/nix/store/", "/nix/store/00000000000000000000000000000000",
		"/nix/store/00000000000000000000000000000000-", "/nix/storex00000000000000000000000000000000-a",
		"/nix/store/00000000000000000000000000000000xa", "/nix/store/0000000000000000000000000000000e-a",
		"/nix/store/00000000000000000000000000000000-.hidden", "/nix/store/00000000000000000000000000000000-a/b",
		"/nix/store/00000000000000000000000000000000-" + strings.Repeat("x", 212),
		// go-nix cleans these into store paths before parsing them.
		"/nix/store/00000000000000000000000000000000-a/", "/nix/store/00000000000000000000000000000000-a/x/..",
		"/nix/store/00000000000000000000000000000000-a/../00000000000000000000000000000001-b",
		"/nix/store/00000000000000000000000000000000-a/.", "//nix/store/00000000000000000000000000000000-a",
		"/nix/store/00000000000000000000000000000000-a b", "/nix/store/00000000000000000000000000000000-a\x00",
	}
	for _, p := range good {
		if err := checkStorePath(p); err != nil {
			t.Errorf("checkStorePath(%q) = %v", p, err)
		}
	}
	for _, p := range bad {
		if err := checkStorePath(p); err == nil {
			t.Errorf("checkStorePath(%q) accepted it", p)
		}
	}
}
