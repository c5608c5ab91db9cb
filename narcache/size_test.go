package narcache

import (
	"flag"
	"strings"
	"testing"
)

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		str  string
		err  string
	}{
		{in: "0", want: 0, str: "0"},
		{in: "1000", want: 1000, str: "1000"},
		{in: "512B", want: 512, str: "512"},
		{in: "4K", want: 4 << 10, str: "4KiB"},
		{in: "4KB", want: 4 << 10, str: "4KiB"},
		{in: "500MiB", want: 500 << 20, str: "500MiB"},
		{in: "1G", want: 1 << 30, str: "1GiB"},
		{in: "50GiB", want: 50 << 30, str: "50GiB"},
		{in: "50gib", want: 50 << 30, str: "50GiB"},
		{in: "2 TiB", want: 2 << 40, str: "2TiB"},
		{in: "1536MiB", want: 1536 << 20, str: "1536MiB"},
		{in: "", err: `invalid size ""`},
		{in: "GiB", err: `invalid size "GiB"`},
		{in: "-1G", err: `invalid size "-1G"`},
		{in: "1.5G", err: `invalid size "1.5G"`},
		{in: "50GB x", err: `invalid size "50GB x"`},
		{in: "5PiB", err: `invalid size "5PiB"`},
		{in: "9999999T", err: `invalid size "9999999T": too large`},
		{in: "99999999999999999999", err: `invalid size "99999999999999999999": too large`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var s Size
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.Var(&s, "size", "")
			err := fs.Set("size", tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Set(%q) = %v, want an error containing %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || s != tc.want || s.String() != tc.str {
				t.Fatalf("Set(%q): %d (%q), %v; want %d (%q)", tc.in, s, s.String(), err, tc.want, tc.str)
			}
		})
	}
}
