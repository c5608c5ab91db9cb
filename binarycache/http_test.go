package binarycache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/decross-store/decross-store/internal/nartest"
)

// faultyServer serves a cache directory over HTTP, letting fault answer a
// request instead; it counts the requests per URL path.
type faultyServer struct {
	mu    sync.Mutex
	hits  map[string]int
	fault func(w http.ResponseWriter, r *http.Request, hit int) bool // true: answered
	files http.Handler
}

func (s *faultyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.URL.Path]++
	hit := s.hits[r.URL.Path]
	s.mu.Unlock()
	if s.fault != nil && s.fault(w, r, hit) {
		return
	}
	s.files.ServeHTTP(w, r)
}

func (s *faultyServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *faultyServer) countPrefix(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.hits {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// truncate answers with a Content-Length larger than the body, so that the
// client sees the connection close early.
func truncate(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Length", fmt.Sprint(len(body)+100))
	io.WriteString(w, body)
}

func TestRetries(t *testing.T) {
	narinfoPath := "/" + helloPath[11:43] + ".narinfo"
	isNAR := func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/nar/") }
	tests := []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request, hit int) bool
		// wantErr is "" when everything must be served.
		wantErr  string
		readErr  string // NarFromPath reads fail so
		notFound bool
		hits     map[string]int
	}{
		{name: "narinfo 500 then ok", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == narinfoPath && hit == 1 {
				http.Error(w, "busy", http.StatusInternalServerError)
				return true
			}
			return false
		}, hits: map[string]int{narinfoPath: 3}}, // 2 for QueryPathInfo, 1 for NarFromPath
		{name: "narinfo 500 always", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == narinfoPath {
				http.Error(w, "broken", http.StatusInternalServerError)
				return true
			}
			return false
		}, wantErr: "giving up after 3 attempts", hits: map[string]int{narinfoPath: 6}},
		{name: "narinfo truncated then ok", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == narinfoPath && hit == 1 {
				truncate(w, "StorePath: "+helloPath+"\n")
				return true
			}
			return false
		}, hits: map[string]int{narinfoPath: 3}},
		{name: "narinfo 403", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == narinfoPath {
				http.Error(w, "denied", http.StatusForbidden)
				return true
			}
			return false
		}, notFound: true, hits: map[string]int{narinfoPath: 2}},
		{name: "narinfo 400", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == narinfoPath {
				http.Error(w, "bad", http.StatusBadRequest)
				return true
			}
			return false
		}, wantErr: "400 Bad Request", hits: map[string]int{narinfoPath: 2}},
		{name: "NAR 503 then ok", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if isNAR(r) && hit == 1 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return true
			}
			return false
		}},
		{name: "NAR truncated", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if isNAR(r) {
				truncate(w, "\xfd7zXZ\x00")
				return true
			}
			return false
		}, readErr: "unexpected EOF"},
		{name: "nix-cache-info 502 then ok", fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
			if r.URL.Path == "/nix-cache-info" && hit == 1 {
				http.Error(w, "gateway", http.StatusBadGateway)
				return true
			}
			return false
		}, hits: map[string]int{"/nix-cache-info": 2}},
	}
	sk, pk := keypair(t, "cache-1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, compression: "xz", signers: []signature.SecretKey{sk}})
			fs := &faultyServer{hits: map[string]int{}, fault: tt.fault, files: http.FileServer(http.Dir(dir))}
			srv := httptest.NewServer(fs)
			t.Cleanup(srv.Close)
			c := open(t, srv.URL, Options{TrustedKeys: []signature.PublicKey{pk}})
			ctx := t.Context()
			info, qerr := c.QueryPathInfo(ctx, helloPath)
			nar, nerr := readNAR(ctx, c, helloPath)
			switch {
			case tt.notFound:
				if info != nil || qerr != nil || nerr == nil {
					t.Errorf("got %v, %v, %v; want not found", info, qerr, nerr)
				}
			case tt.wantErr != "":
				for _, err := range []error{qerr, nerr} {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), srv.URL+narinfoPath) {
						t.Errorf("error %v does not say %q and name the URL", err, tt.wantErr)
					}
				}
			case tt.readErr != "":
				if qerr != nil || nerr == nil || !strings.Contains(nerr.Error(), tt.readErr) || !strings.Contains(nerr.Error(), helloPath) {
					t.Errorf("got %v, %v; want a read error saying %q and naming the path", qerr, nerr, tt.readErr)
				}
				if n := fs.countPrefix("/nar/"); n != 1 {
					t.Errorf("a NAR broken mid-stream was asked for %d times", n)
				}
			default:
				if qerr != nil || nerr != nil || string(nar) != string(helloNAR) {
					t.Errorf("not served: %v, %v", qerr, nerr)
				}
			}
			for p, n := range tt.hits {
				if got := fs.count(p); got != n {
					t.Errorf("%s asked for %d times, want %d", p, got, n)
				}
			}
		})
	}
}

// TestStall checks that a server that stops answering fails the request
// instead of hanging it, by each of the bounds that apply.
func TestStall(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	narinfoPath := "/" + helloPath[11:43] + ".narinfo"
	tests := []struct {
		name  string
		stall func(r *http.Request) (before string, stall bool) // stall after writing before
		opts  Options
		ctx   time.Duration // 0: no deadline of the caller's
		want  string
	}{
		{name: "narinfo, request timeout", stall: func(r *http.Request) (string, bool) { return "", r.URL.Path == narinfoPath },
			opts: Options{RequestTimeout: 50 * time.Millisecond, Attempts: 2}, want: "giving up after 2 attempts"},
		{name: "narinfo, caller deadline", stall: func(r *http.Request) (string, bool) { return "", r.URL.Path == narinfoPath },
			ctx: 100 * time.Millisecond, want: "context deadline exceeded"},
		{name: "narinfo, client timeout", stall: func(r *http.Request) (string, bool) { return "", r.URL.Path == narinfoPath },
			opts: Options{HTTPClient: &http.Client{Timeout: 50 * time.Millisecond}, Attempts: 1}, want: "Client.Timeout"},
		{name: "NAR headers", stall: func(r *http.Request) (string, bool) { return "", strings.HasPrefix(r.URL.Path, "/nar/") },
			opts: Options{StallTimeout: 50 * time.Millisecond, Attempts: 2}, want: "no data received"},
		{name: "NAR body", stall: func(r *http.Request) (string, bool) {
			return string(helloNAR[:40]), strings.HasPrefix(r.URL.Path, "/nar/")
		}, opts: Options{StallTimeout: 50 * time.Millisecond}, want: "no data received"},
		{name: "NAR body, caller deadline", stall: func(r *http.Request) (string, bool) {
			return string(helloNAR[:40]), strings.HasPrefix(r.URL.Path, "/nar/")
		}, ctx: 100 * time.Millisecond, want: "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCache(t, dir, &entry{path: helloPath, nar: helloNAR, signers: []signature.SecretKey{sk}})
			release := make(chan struct{})
			fs := &faultyServer{hits: map[string]int{}, files: http.FileServer(http.Dir(dir)),
				fault: func(w http.ResponseWriter, r *http.Request, hit int) bool {
					before, stall := tt.stall(r)
					if !stall {
						return false
					}
					if before != "" {
						w.Header().Set("Content-Length", fmt.Sprint(len(helloNAR)))
						io.WriteString(w, before)
						w.(http.Flusher).Flush()
					}
					select {
					case <-release:
					case <-r.Context().Done():
					}
					return true
				}}
			srv := httptest.NewServer(fs)
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) })
			tt.opts.TrustedKeys = []signature.PublicKey{pk}
			c := open(t, srv.URL, tt.opts)
			ctx := t.Context()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			_, err := readNAR(ctx, c, helloPath)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v does not say %q", err, tt.want)
			}
		})
	}
}

// bigNAR is the NAR of one regular file of size bytes, generated as it is
// read.
func bigNAR(size int64) io.Reader {
	head := nartest.Encode(nartest.Reg(""))
	// Encode(Reg("")) ends in the empty contents string (its 8-byte length)
	// and the closing ")".
	tail := head[len(head)-16:]
	head = binary.LittleEndian.AppendUint64(head[:len(head)-24], uint64(size))
	pad := make([]byte, (8-size%8)%8)
	return io.MultiReader(strings.NewReader(string(head)), io.LimitReader(&pattern{}, size), strings.NewReader(string(pad)), strings.NewReader(string(tail)))
}

// pattern is endless, somewhat compressible bytes.
type pattern struct{ i uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for j := range b {
		b[j] = byte(p.i>>3) ^ byte(p.i>>13)
		p.i++
	}
	return len(b), nil
}

// TestLargeNARMemory streams a large NAR through NarFromPath and checks
// that what the whole test process allocated stays far below its size.
func TestLargeNARMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 128 MiB")
	}
	const size = 128 << 20
	h := sha256.New()
	narSize, err := io.Copy(h, bigNAR(size))
	if err != nil {
		t.Fatal(err)
	}
	sk, pk := keypair(t, "cache-1")
	for _, comp := range []string{"none", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			ext := map[string]string{"none": "", "zstd": ".zst"}[comp]
			narinfo := fmt.Sprintf("StorePath: %s\nURL: nar/big.nar%s\nCompression: %s\nNarHash: sha256:%s\nNarSize: %d\nReferences: \n",
				helloPath, ext, comp, nixbase32.EncodeToString(h.Sum(nil)), narSize)
			info := &entry{path: helloPath, nar: nil}
			pi := info.info()
			copy(pi.NarHash[:], h.Sum(nil))
			pi.NarSize = uint64(narSize)
			sig, err := pi.Sign(sk)
			if err != nil {
				t.Fatal(err)
			}
			narinfo += "Sig: " + sig + "\n"
			mux := http.NewServeMux()
			mux.HandleFunc("/nix-cache-info", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "StoreDir: /nix/store\n") })
			mux.HandleFunc("/"+helloPath[11:43]+".narinfo", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, narinfo) })
			mux.HandleFunc("/nar/big.nar"+ext, func(w http.ResponseWriter, r *http.Request) {
				if comp == "none" {
					io.Copy(w, bigNAR(size))
					return
				}
				enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
				if err != nil {
					panic(err)
				}
				io.Copy(enc, bigNAR(size))
				enc.Close()
			})
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			c := open(t, srv.URL, Options{TrustedKeys: []signature.PublicKey{pk}})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			rc, err := c.NarFromPath(t.Context(), helloPath)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != narSize {
				t.Fatalf("read %d bytes, %v; want %d", n, err, narSize)
			}
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s: streamed %d MiB, allocated %.1f MiB (client and server), heap in use %.1f MiB",
				comp, narSize>>20, float64(alloc)/(1<<20), float64(after.HeapInuse)/(1<<20))
			if alloc > 32<<20 {
				t.Errorf("allocated %d MiB to stream a %d MiB NAR", alloc>>20, narSize>>20)
			}
		})
	}
}
