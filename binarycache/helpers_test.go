package binarycache

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"

	"github.com/decross-store/decross-store/internal/nartest"
	"github.com/decross-store/decross-store/pathinfo"
)

var update = flag.Bool("update", false, "rewrite files under testdata/")

// Paths of the test caches. Their hash parts are valid nixbase32; nothing
// checks them against contents, as in a real cache.
const (
	helloPath = "/nix/store/0f7jqcwv2hb0akd1lhd8rbm1wsc0qhkm-hello"
	depPath   = "/nix/store/1g9rsgy1mvz4x55y2whgksxa3qcc0ylv-dep"
	otherPath = "/nix/store/2k5sh6rbhz0dlgw2d8kw4bnll2j5xfzb-other"
	drvPath   = "/nix/store/3mrw3pf1n3rd4s1dl6lp3vxxvb3dd8b4-hello.drv"
	// caPath and caPathCA are what nix-store --add gives a file named
	// dep holding "hello from a binary cache\n", whose NAR is helloNAR.
	caPath   = "/nix/store/blh3qj8gqibsi9hbq436mzr5fpj5sk2v-dep"
	caPathCA = "fixed:r:sha256:1hm1xxi0d0af48bb8qh303d4lncb4fzmdhmyhvv35ppqi06bg0qc"
)

// helloNAR is the NAR of testdata/hello.nar.bz2: Go has no bzip2 writer,
// so that file was made once with bzip2(1).
var helloNAR = nartest.Encode(nartest.Reg("hello from a binary cache\n"))

func keypair(t testing.TB, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

// compress is data compressed as a narinfo's Compression says, and the
// file name extension Nix gives it.
func compress(t testing.TB, compression string, data []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	var ext string
	var err error
	switch compression {
	case "none":
		return data, ""
	case "xz":
		ext = ".xz"
		var w *xz.Writer
		if w, err = xz.NewWriter(&buf); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	case "zstd":
		ext = ".zst"
		var w *zstd.Encoder
		if w, err = zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest)); err == nil {
			if _, err = w.Write(data); err == nil {
				err = w.Close()
			}
		}
	case "br":
		ext = ".br"
		w := brotli.NewWriterLevel(&buf, brotli.BestSpeed)
		if _, err = w.Write(data); err == nil {
			err = w.Close()
		}
	case "gzip":
		ext = ".gz"
		w := gzip.NewWriter(&buf)
		if _, err = w.Write(data); err == nil {
			err = w.Close()
		}
	case "bzip2":
		if !bytes.Equal(data, helloNAR) {
			t.Fatal("bzip2: only helloNAR has a compressed copy")
		}
		b, err := os.ReadFile("testdata/hello.nar.bz2")
		if err != nil {
			t.Fatal(err)
		}
		return b, ".bz2"
	default:
		t.Fatalf("compress: unknown compression %q", compression)
	}
	if err != nil {
		t.Fatalf("compress %s: %v", compression, err)
	}
	return buf.Bytes(), ext
}

// entry is one path of a test cache.
type entry struct {
	path        string
	nar         []byte
	compression string // "" = none
	refs        []string
	deriver     string
	ca          string
	signers     []signature.SecretKey
	// file replaces the compressed file after the narinfo was written
	// from the real one.
	file []byte
	// narinfo edits the narinfo text before it is written.
	narinfo func(string) string
}

// info is the PathInfo the cache must report for e.
func (e *entry) info() *pathinfo.PathInfo {
	refs := append([]string(nil), e.refs...)
	sort.Strings(refs)
	p := &pathinfo.PathInfo{
		Path:       e.path,
		Deriver:    e.deriver,
		NarHash:    sha256.Sum256(e.nar),
		NarSize:    uint64(len(e.nar)),
		References: refs,
		CA:         e.ca,
	}
	return p
}

// writeCache makes a binary cache in dir as nix copy --to file://dir
// would, and returns the PathInfos it must report, by path.
func writeCache(t testing.TB, dir string, entries ...*entry) map[string]*pathinfo.PathInfo {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"))
	infos := map[string]*pathinfo.PathInfo{}
	for _, e := range entries {
		comp := e.compression
		if comp == "" {
			comp = "none"
		}
		file, ext := compress(t, comp, e.nar)
		fileHash := sha256.Sum256(file)
		url := "nar/" + nixbase32.EncodeToString(fileHash[:]) + ".nar" + ext
		info := e.info()
		var b strings.Builder
		fmt.Fprintf(&b, "StorePath: %s\nURL: %s\nCompression: %s\n", e.path, url, comp)
		fmt.Fprintf(&b, "FileHash: sha256:%s\nFileSize: %d\n", nixbase32.EncodeToString(fileHash[:]), len(file))
		fmt.Fprintf(&b, "NarHash: %s\nNarSize: %d\nReferences: ", info.NarHash, info.NarSize)
		var names []string
		for _, r := range info.References {
			names = append(names, strings.TrimPrefix(r, "/nix/store/"))
		}
		b.WriteString(strings.Join(names, " ") + "\n")
		if e.deriver != "" {
			fmt.Fprintf(&b, "Deriver: %s\n", strings.TrimPrefix(e.deriver, "/nix/store/"))
		}
		for _, sk := range e.signers {
			sig, err := info.Sign(sk)
			if err != nil {
				t.Fatal(err)
			}
			info.Sigs = append(info.Sigs, sig)
			fmt.Fprintf(&b, "Sig: %s\n", sig)
		}
		if e.ca != "" {
			fmt.Fprintf(&b, "CA: %s\n", e.ca)
		}
		text := b.String()
		if e.narinfo != nil {
			text = e.narinfo(text)
		}
		if e.file != nil {
			file = e.file
		}
		write(t, filepath.Join(dir, url), file)
		write(t, filepath.Join(dir, strings.TrimPrefix(e.path, "/nix/store/")[:32]+".narinfo"), []byte(text))
		infos[e.path] = info
	}
	return infos
}

func write(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
