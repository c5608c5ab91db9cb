package httpcache

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestRawFrame: a frame of raw blocks is valid zstd for every length
// around the block size, as long as rawFrameSize says, and a NAR longer or
// shorter than its entry says fails.
func TestRawFrame(t *testing.T) {
	h, err := New(Config{Store: fakeStore{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, rawBlockMax - 1, rawBlockMax, rawBlockMax + 1, 3*rawBlockMax + 17, copyBuffer, 2*copyBuffer + 5} {
		data := bytes.Repeat([]byte("nar!"), n/4+1)[:n]
		var out bytes.Buffer
		if err := h.sendRaw(&out, bytes.NewReader(data), uint64(n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if int64(out.Len()) != rawFrameSize(uint64(n)) {
			t.Errorf("%d bytes: frame of %d bytes, rawFrameSize says %d", n, out.Len(), rawFrameSize(uint64(n)))
		}
		zr, err := zstd.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		zr.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d bytes: decoded %d bytes, %v", n, len(got), err)
		}
	}
	for _, tt := range []struct {
		data string
		n    uint64
	}{{"short", 10}, {"longer than said", 5}} {
		if err := h.sendRaw(io.Discard, strings.NewReader(tt.data), tt.n); err == nil {
			t.Errorf("%q as %d bytes: no error", tt.data, tt.n)
		}
	}
}

type fakeStore struct{ Store }

// A request whose client has left (or half-closed its side) is aborted,
// not answered with an empty 200 that a client still reading would take
// for a narinfo.
func TestGoneClientIsAborted(t *testing.T) {
	h, err := New(Config{Store: fakeStore{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequest(http.MethodGet, "/00000000000000000000000000000000.narinfo", nil).WithContext(ctx)
	w := httptest.NewRecorder()
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
		if w.Code == http.StatusOK && w.Body.Len() == 0 && w.Flushed {
			t.Error("an empty 200 went out")
		}
	}()
	h.fail(w, r, "narinfo", "/nix/store/00000000000000000000000000000000-x", context.Canceled)
}
