package daemonproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// enc builds the bytes a client sends.
type enc struct{ bytes.Buffer }

func (e *enc) u64(vs ...uint64) *enc {
	for _, v := range vs {
		_ = binary.Write(&e.Buffer, binary.LittleEndian, v)
	}
	return e
}

func (e *enc) str(ss ...string) *enc {
	for _, s := range ss {
		e.u64(uint64(len(s)))
		e.WriteString(s)
		e.Write(make([]byte, padLen(uint64(len(s)))))
	}
	return e
}

func (e *enc) strs(ss ...string) *enc {
	e.u64(uint64(len(ss)))
	return e.str(ss...)
}

// frames writes a framed stream with the given chunks and the terminator.
func (e *enc) frames(chunks ...[]byte) *enc {
	for _, c := range chunks {
		e.u64(uint64(len(c)))
		e.Write(c)
	}
	return e.u64(0)
}

func v(m uint64) uint64 { return 1<<8 | m }

// hello is the client side of the handshake at protocol 1.m, as Nix sends
// it (no CPU affinity, no reserved space).
func hello(m uint64, features ...string) *enc {
	e := (&enc{}).u64(workerMagic1, v(m))
	if m >= 38 {
		e.strs(features...)
	}
	if m >= 14 {
		e.u64(0)
	}
	if m >= 11 {
		e.u64(0)
	}
	return e
}

// dec reads what the server sent.
type dec struct {
	t *testing.T
	b []byte
}

func (d *dec) u64() uint64 {
	d.t.Helper()
	if len(d.b) < 8 {
		d.t.Fatalf("reply ended early, want an integer")
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) str() string {
	d.t.Helper()
	n := d.u64()
	total := n + padLen(n)
	if uint64(len(d.b)) < total {
		d.t.Fatalf("reply ended inside a string of %d bytes", n)
	}
	s := string(d.b[:n])
	d.b = d.b[total:]
	return s
}

func (d *dec) expect(what string, want uint64) {
	d.t.Helper()
	if got := d.u64(); got != want {
		d.t.Fatalf("%s = %#x, want %#x", what, got, want)
	}
}

// handshake skips the server's handshake reply at protocol 1.m.
func (d *dec) handshake(m uint64) {
	d.t.Helper()
	d.expect("magic", workerMagic2)
	d.expect("server version", serverVersion)
	if m >= 38 {
		d.expect("server features", 0)
	}
	if m >= 33 {
		d.str()
	}
	if m >= 35 {
		d.expect("trusted", 2)
	}
	d.expect("handshake end", stderrLast)
}

// errorMsg reads one STDERR_ERROR in the layout of protocol 1.m.
func (d *dec) errorMsg(m uint64) string {
	d.t.Helper()
	d.expect("stderr", stderrError)
	if m < 26 {
		msg := d.str()
		d.expect("exit status", 1)
		return msg
	}
	if s := d.str(); s != "Error" {
		d.t.Fatalf("error type %q", s)
	}
	d.expect("level", 0)
	if s := d.str(); s != "Error" {
		d.t.Fatalf("error name %q", s)
	}
	msg := d.str()
	d.expect("havePos", 0)
	d.expect("traces", 0)
	return msg
}

func (d *dec) end() {
	d.t.Helper()
	if len(d.b) != 0 {
		d.t.Fatalf("%d unexpected trailing bytes: %x", len(d.b), d.b)
	}
}

// serve runs ServeConn on the given client bytes and returns what the
// server wrote and ServeConn's result.
func serve(st Store, in []byte) ([]byte, error) {
	var out bytes.Buffer
	srv := &Server{Store: st, NixVersion: "decross-store 0.1"}
	err := srv.ServeConn(context.Background(), stdio{bytes.NewReader(in), &out})
	return out.Bytes(), err
}

// hexWords parses the 8-byte-word hex notation of the protocol notes.
func hexWords(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares got with testdata/<name>.golden, or rewrites the file
// with -update.
func golden(t *testing.T, name string, got []byte, regen string) {
	t.Helper()
	file := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (create it with: %s)", err, regen)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s\n got: %s\nwant: %s\nif the change is intended, regenerate with: %s",
			file, words(got), words(want), regen)
	}
}

func words(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 8 {
		fmt.Fprintf(&sb, "%x ", b[i:min(i+8, len(b))])
	}
	return sb.String()
}
