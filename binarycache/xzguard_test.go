package binarycache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/ulikunitz/xz"

	"github.com/decross-store/decross-store/internal/fuzzseed"
)

// xzPayload is what the files in testdata/xz hold.
func xzPayload() []byte {
	var b bytes.Buffer
	for i := range 4000 {
		fmt.Fprintf(&b, "line %d of the xz test payload\n", i)
	}
	return b.Bytes()
}

// xzStored is an xz file (one stream, no check) holding data in one block
// of uncompressed LZMA2 chunks, whose header declares the dictionary
// props encodes. xz(1) writes such chunks only for large incompressible
// data.
func xzStored(data []byte, props byte) []byte {
	flags := []byte{0, 0} // check: none
	out := append([]byte{}, xzMagic...)
	out = append(out, flags...)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(flags))
	hdr := []byte{2, 0, 0x21, 1, props, 0, 0, 0}
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.ChecksumIEEE(hdr))
	out = append(out, hdr...)
	blockStart := len(out) - len(hdr)
	for i, first := 0, true; i < len(data); first = false {
		n := min(len(data)-i, 1000)
		ctl := byte(0x02)
		if first {
			ctl = 0x01 // resets the dictionary
		}
		out = append(out, ctl, byte((n-1)>>8), byte(n-1))
		out = append(out, data[i:i+n]...)
		i += n
	}
	out = append(out, 0)
	unpadded := len(out) - blockStart
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	index := []byte{0, 1}
	index = binary.AppendUvarint(index, uint64(unpadded))
	index = binary.AppendUvarint(index, uint64(len(data)))
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(index))
	out = append(out, index...)
	footer := binary.LittleEndian.AppendUint32(nil, uint32(len(index)/4-1))
	footer = append(footer, flags...)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(footer))
	out = append(out, footer...)
	return append(out, 'Y', 'Z')
}

// xzFiles are made by xz(1) from xzPayload (go test ./binarycache -run
// TestXZFiles -update rewrites them); tooBig says the dictionary is over
// maxXZDict.
var xzFiles = []struct {
	name   string
	args   []string
	tooBig bool
}{
	{"preset6", []string{"-6"}, false}, // what Nix writes
	{"preset9", []string{"-9"}, false},
	{"multiblock", []string{"-6", "-T2", "--block-size=16KiB"}, false},
	{"sha256", []string{"-0", "--check=sha256"}, false},
	{"crc32", []string{"-1", "--check=crc32"}, false},
	{"nocheck", []string{"-1", "--check=none"}, false},
	{"dict256m", []string{"--lzma2=dict=256MiB"}, true},
}

func readXZFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "xz", name+".xz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestXZFiles(t *testing.T) {
	if !*update {
		t.Skip("only with -update: rewrites testdata/xz with xz(1)")
	}
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("-update needs xz(1)")
	}
	for _, f := range xzFiles {
		cmd := exec.Command("xz", append([]string{"-c"}, f.args...)...)
		cmd.Stdin = bytes.NewReader(xzPayload())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %s: %v", strings.Join(f.args, " "), err)
		}
		write(t, filepath.Join("testdata", "xz", f.name+".xz"), out)
	}
}

// guardAll walks data with an xzGuard, in reads of the sizes r gives.
func guardAll(data []byte, split func(io.Reader) io.Reader) error {
	g := newXZGuard("test.xz", maxXZDict)
	r := split(bytes.NewReader(data))
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			k, ferr := g.feed(p)
			if ferr != nil {
				return ferr
			}
			p = p[k:]
		}
		if err == io.EOF {
			return g.end()
		}
		if err != nil {
			return err
		}
	}
}

// decodeGuarded decompresses data as NarFromPath does, returning at most
// limit bytes and the largest dictionary it made a decoder with.
func decodeGuarded(data []byte, split func(io.Reader) io.Reader, limit int64) ([]byte, uint64, error) {
	x := newXZReader(split(bytes.NewReader(data)), "test.xz", maxXZDict)
	out, err := io.ReadAll(io.LimitReader(x, limit))
	return out, x.maxDict, err
}

var splits = map[string]func(io.Reader) io.Reader{
	"whole":   func(r io.Reader) io.Reader { return r },
	"bytes":   iotest.OneByteReader,
	"halves":  iotest.HalfReader,
	"7-bytes": func(r io.Reader) io.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) },
}

// ulikunitzXZ is payload as ulikunitz/xz writes it: blocks without sizes in
// their headers, several LZMA2 chunks each.
func ulikunitzXZ(t testing.TB, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{BlockSize: 1 << 20}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestXZGuardAccepts(t *testing.T) {
	payload := xzPayload()
	big := bytes.Repeat(payload, 24) // 3.3 MB: blocks of several chunks
	tests := []struct {
		name    string
		file    []byte
		payload []byte
	}{
		{"two streams with padding", append(append(readXZFile(t, "preset6"), 0, 0, 0, 0, 0, 0, 0, 0), readXZFile(t, "multiblock")...), append(append([]byte(nil), payload...), payload...)},
		{"ulikunitz", ulikunitzXZ(t, big), big},
		{"stored chunks", xzStored(payload, 22), payload},
		{"stored chunks, 64 MiB", xzStored(payload, 28), payload},
	}
	for _, f := range xzFiles {
		if !f.tooBig {
			tests = append(tests, struct {
				name    string
				file    []byte
				payload []byte
			}{f.name, readXZFile(t, f.name), payload})
		}
	}
	for _, tt := range tests {
		for sname, split := range splits {
			t.Run(tt.name+"/"+sname, func(t *testing.T) {
				if err := guardAll(tt.file, split); err != nil {
					t.Fatalf("guard: %v", err)
				}
				got, _, err := decodeGuarded(tt.file, split, 1<<30)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if !bytes.Equal(got, tt.payload) {
					t.Fatalf("decoded %d bytes, not the payload (%d bytes)", len(got), len(tt.payload))
				}
			})
		}
	}
}

// xzBlockHeaders are the offsets of the block headers of a single-stream
// file whose blocks all have their compressed size in the header (as xz -T
// writes them), or only one block.
func xzBlockHeaders(t testing.TB, file []byte) []int {
	t.Helper()
	check := int(xzCheckSizes[file[7]&0xf])
	var offs []int
	for off := 12; file[off] != 0; {
		offs = append(offs, off)
		hlen := (int(file[off]) + 1) * 4
		if file[off+1]&0x40 == 0 {
			break
		}
		size, n := binary.Uvarint(file[off+2:])
		if n <= 0 {
			t.Fatal("bad compressed size")
		}
		blen := hlen + int(size)
		off += blen + (4-blen%4)%4 + check
	}
	return offs
}

// setXZDict is file with the LZMA2 properties byte of the block header at
// off set to props, and that header's CRC32 fixed up.
func setXZDict(t testing.TB, file []byte, off int, props byte) []byte {
	t.Helper()
	out := bytes.Clone(file)
	hlen := (int(out[off]) + 1) * 4
	h := out[off : off+hlen]
	pos := 2
	for _, present := range []bool{h[1]&0x40 != 0, h[1]&0x80 != 0} {
		if present {
			_, n := binary.Uvarint(h[pos:])
			pos += n
		}
	}
	if h[pos] != 0x21 || h[pos+1] != 1 {
		t.Fatalf("block header at %d: %x: not a lone LZMA2 filter", off, h)
	}
	h[pos+2] = props
	binary.LittleEndian.PutUint32(h[hlen-4:], crc32.ChecksumIEEE(h[:hlen-4]))
	return out
}

func TestLZMA2Dict(t *testing.T) {
	for _, tt := range []struct {
		props byte
		want  uint64
	}{{0, 4 << 10}, {1, 6 << 10}, {18, 2 << 20}, {22, 8 << 20}, {28, 64 << 20}, {29, 96 << 20}, {36, 1 << 30}, {39, 3 << 30}, {40, 1<<32 - 1}} {
		if got := lzma2Dict(tt.props); got != tt.want {
			t.Errorf("lzma2Dict(%d) = %d, want %d", tt.props, got, tt.want)
		}
	}
}

func TestXZGuardRefuses(t *testing.T) {
	preset6 := readXZFile(t, "preset6")
	multi := readXZFile(t, "multiblock")
	hdrs := xzBlockHeaders(t, multi)
	if len(hdrs) < 3 {
		t.Fatalf("multiblock.xz has %d blocks, want several", len(hdrs))
	}
	hdr := hdrs[0]
	payload := xzPayload()
	tests := []struct {
		name string
		file []byte
		want string // in the error
	}{
		{"xz --lzma2=dict=256MiB", readXZFile(t, "dict256m"), "LZMA2 dictionary of 268435456 bytes, more than the 67108864 bytes allowed"},
		{"1 GiB", setXZDict(t, preset6, 12, 36), "dictionary of 1073741824 bytes"},
		{"4 GiB", setXZDict(t, preset6, 12, 40), "dictionary of 4294967295 bytes"},
		{"96 MiB", setXZDict(t, preset6, 12, 29), "dictionary of 100663296 bytes"},
		{"third block 1 GiB", setXZDict(t, multi, hdrs[2], 36), "dictionary of 1073741824 bytes"},
		{"stored chunks, 1 GiB", xzStored(payload, 36), "dictionary of 1073741824 bytes"},
		{"props 41", setXZDict(t, preset6, 12, 41), "bad LZMA2 filter properties"},
		{"header CRC", func() []byte { b := bytes.Clone(preset6); b[12+4]++; return b }(), "block header CRC32"},
		{"empty", nil, "ends inside a stream"},
		{"not xz", []byte("hello, this is not an xz file at all"), "no stream header magic"},
		{"garbage after", append(bytes.Clone(preset6), 1, 2, 3, 4), "data after a stream"},
		{"odd padding", append(bytes.Clone(preset6), 0, 0, 0), "ends inside a stream"},
		{"index count", func() []byte {
			b := bytes.Clone(multi)
			// The index follows the last block; its record count is
			// its second byte.
			i := len(b) - 12 - int(binary.LittleEndian.Uint32(b[len(b)-8:])+1)*4
			b[i+1]++
			return b
		}(), "the index lists"},
		{"first block header of multiblock", setXZDict(t, multi, hdr, 30), "dictionary of 134217728 bytes"},
	}
	for _, tt := range tests {
		for sname, split := range splits {
			t.Run(tt.name+"/"+sname, func(t *testing.T) {
				err := guardAll(tt.file, split)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("guard: %v, want ErrCorrupt and %q", err, tt.want)
				}
				_, _, err = decodeGuarded(tt.file, split, 1<<30)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("decode: %v, want ErrCorrupt and %q", err, tt.want)
				}
			})
		}
	}
}

func TestXZGuardTruncated(t *testing.T) {
	for _, name := range []string{"multiblock", "sha256", "nocheck"} {
		file := readXZFile(t, name)
		for n := range len(file) {
			if err := guardAll(file[:n], splits["whole"]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s cut to %d of %d bytes: %v, want ErrCorrupt", name, n, len(file), err)
			}
			if _, _, err := decodeGuarded(file[:n], splits["whole"], 1<<30); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode %s cut to %d of %d bytes: %v, want ErrCorrupt", name, n, len(file), err)
			}
		}
	}
}

// TestXZDictAllocation checks that NarFromPath refuses an xz file whose
// header asks for 1 GiB before the decoder allocates it.
func TestXZDictAllocation(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	dir := t.TempDir()
	payload := xzPayload()
	e := &entry{path: helloPath, nar: payload, signers: []signature.SecretKey{sk},
		file: setXZDict(t, readXZFile(t, "preset6"), 12, 36),
		narinfo: func(s string) string {
			return strings.Replace(dropFileFields(s), "Compression: none", "Compression: xz", 1)
		}}
	writeCache(t, dir, e)
	c := open(t, "file://"+dir, Options{TrustedKeys: []signature.PublicKey{pk}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := readNAR(context.Background(), c, helloPath)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "dictionary of 1073741824 bytes") {
		t.Fatalf("read: %v, want ErrCorrupt naming the dictionary", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Fatalf("allocated %d bytes for a refused 1 GiB dictionary", n)
	} else {
		t.Logf("allocated %d bytes", n)
	}
}

// xzHidden is file (one block of one LZMA2 chunk, no check, as xz -1
// --check=none writes it) with its chunk's compressed size enlarged to
// take in an end marker, block padding and a second block header declaring
// the dictionary props encodes, followed by what makes the walk accept the
// rest. An LZMA2 decoder stops reading a chunk once it has its
// uncompressed size, so one that parsed the container itself would read
// the hidden header and allocate its dictionary.
func xzHidden(t testing.TB, file []byte, props byte) []byte {
	t.Helper()
	if file[7] != 0 {
		t.Fatal("want a file without checks")
	}
	blk := 12
	chunk := blk + (int(file[blk])+1)*4
	if file[chunk] < 0xe0 {
		t.Fatalf("the first chunk's control byte is %#x, want a compressed chunk with a dictionary reset", file[chunk])
	}
	data := int(binary.BigEndian.Uint16(file[chunk+3:])) + 1
	end := chunk + 6 + data
	if file[end] != 0 {
		t.Fatal("want a block of one chunk")
	}
	// What a decoder that parses the container reads after the chunk.
	hidden := []byte{0}
	for (end+len(hidden)-blk)%4 != 0 {
		hidden = append(hidden, 0)
	}
	hdr := []byte{2, 0, 0x21, 1, props, 0, 0, 0}
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.ChecksumIEEE(hdr))
	hidden = append(hidden, hdr...)

	out := append([]byte(nil), file[:end]...)
	binary.BigEndian.PutUint16(out[chunk+3:], uint16(data+len(hidden)-1))
	out = append(out, hidden...)
	out = append(out, 0) // the end marker the walk sees
	unpadded := len(out) - blk
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	index := []byte{0, 1}
	index = binary.AppendUvarint(index, uint64(unpadded))
	index = binary.AppendUvarint(index, uint64(len(xzPayload())))
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	index = binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(index))
	out = append(out, index...)
	footer := binary.LittleEndian.AppendUint32(nil, uint32(len(index)/4-1))
	footer = append(footer, 0, 0)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(footer))
	out = append(out, footer...)
	return append(out, 'Y', 'Z')
}

// TestXZHiddenBlockHeader checks that a block header hidden in chunk data,
// where the walk does not look, never reaches a decoder: the file is
// refused without allocating the dictionary it declares.
func TestXZHiddenBlockHeader(t *testing.T) {
	sk, pk := keypair(t, "cache-1")
	payload := xzPayload()
	for _, tt := range []struct {
		name  string
		props byte
	}{{"128 MiB", 30}, {"4 GiB", 40}} {
		t.Run(tt.name, func(t *testing.T) {
			file := xzHidden(t, readXZFile(t, "nocheck"), tt.props)
			if err := guardAll(file, splits["whole"]); err != nil {
				t.Fatalf("the walk refuses the file (%v); the test no longer builds the attack", err)
			}
			for sname, split := range splits {
				_, dict, err := decodeGuarded(file, split, 1<<30)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "ends before its end marker") {
					t.Fatalf("decode (%s): %v, want ErrCorrupt and the end marker", sname, err)
				}
				if dict != 1<<20 {
					t.Fatalf("decode (%s): dictionary of %d bytes, want xz -1's 1 MiB", sname, dict)
				}
			}
			dir := t.TempDir()
			e := &entry{path: helloPath, nar: payload, signers: []signature.SecretKey{sk}, file: file,
				narinfo: func(s string) string {
					return strings.Replace(dropFileFields(s), "Compression: none", "Compression: xz", 1)
				}}
			writeCache(t, dir, e)
			c := open(t, "file://"+dir, Options{TrustedKeys: []signature.PublicKey{pk}})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := readNAR(context.Background(), c, helloPath)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: %v, want ErrCorrupt", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Fatalf("allocated %d bytes for a file whose hidden block asks for %d", n, lzma2Dict(tt.props))
			} else {
				t.Logf("allocated %d bytes: %v", n, err)
			}
		})
	}
}

// xzFuzzSeeds are the testdata/xz files and broken variants of them.
func xzFuzzSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, f := range xzFiles {
		if f.name == "preset6" || f.name == "multiblock" || f.name == "nocheck" || f.name == "dict256m" {
			seeds[f.name] = readXZFile(t, f.name)
		}
	}
	seeds["1gib"] = setXZDict(t, seeds["preset6"], 12, 36)
	seeds["truncated"] = seeds["multiblock"][:len(seeds["multiblock"])/2]
	seeds["two-streams"] = append(append(bytes.Clone(seeds["nocheck"]), 0, 0, 0, 0), seeds["nocheck"]...)
	seeds["stored"] = xzStored([]byte("stored chunks"), 22)
	seeds["empty"] = nil
	seeds["hidden-header"] = xzHidden(t, seeds["nocheck"], 30)
	return seeds
}

// FuzzXZGuard feeds arbitrary files to the guard, and to the decoder
// behind it. Neither may panic; the guard must not change the bytes, must
// reach the same verdict however the reads are split, and must fail only
// with ErrCorrupt.
func FuzzXZGuard(f *testing.F) {
	for _, s := range xzFuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := guardAll(data, splits["whole"])
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("guard: %v, want ErrCorrupt", err)
		}
		err1 := guardAll(data, splits["bytes"])
		if fmt.Sprint(err) != fmt.Sprint(err1) {
			t.Fatalf("whole reads: %v; byte reads: %v", err, err1)
		}
		const limit = 16 << 20
		out, dict, derr := decodeGuarded(data, splits["whole"], limit)
		if derr != nil && !errors.Is(derr, ErrCorrupt) {
			t.Fatalf("decode: %v, want ErrCorrupt", derr)
		}
		if err != nil && derr == nil && len(out) < limit {
			t.Fatalf("decoded a file the walk refuses (%v)", err)
		}
		if dict > maxXZDict {
			t.Fatalf("decoded with a dictionary of %d bytes", dict)
		}
	})
}

func TestXZFuzzSeeds(t *testing.T) {
	fuzzseed.Check(t, "FuzzXZGuard", xzFuzzSeeds(t), *update, "go test ./binarycache -run TestXZFuzzSeeds -update")
}

// TestXZDictCappedByBlockSize checks that a block whose header declares
// its uncompressed size is decoded with a window of that size rather than
// the dictionary its filter declares, and that a header claiming less
// than the block holds never changes what is decoded.
func TestXZDictCappedByBlockSize(t *testing.T) {
	payload := xzPayload()
	multi := readXZFile(t, "multiblock")
	out, dict, err := decodeGuarded(multi, splits["whole"], 1<<30)
	if err != nil || !bytes.Equal(out, payload) {
		t.Fatalf("decode multiblock.xz: %d bytes, %v; want the payload", len(out), err)
	}
	if dict != 16<<10 {
		t.Fatalf("multiblock.xz (16 KiB blocks, 8 MiB dictionary) decoded with a %d-byte window, want 16 KiB", dict)
	}
	if _, dict, _ := decodeGuarded(readXZFile(t, "preset6"), splits["whole"], 1<<30); dict != 8<<20 {
		t.Fatalf("preset6.xz (no sizes in its block header) decoded with a %d-byte window, want its 8 MiB dictionary", dict)
	}

	// Every block header of multiblock gives a size over 4 KiB; say 4 KiB
	// (a varint no longer than before) and pad the header back to its
	// length.
	lie := bytes.Clone(multi)
	for _, off := range xzBlockHeaders(t, lie) {
		hlen := (int(lie[off]) + 1) * 4
		h := lie[off : off+hlen]
		if h[1]&0xc0 != 0xc0 {
			t.Fatalf("block header at %d has no sizes", off)
		}
		_, n := binary.Uvarint(h[2:])
		pos := 2 + n
		size, m := binary.Uvarint(h[pos:])
		if size <= 4096 || size > 16<<10 {
			t.Fatalf("block header at %d: uncompressed size %d, want more than 4 KiB, at most 16", off, size)
		}
		rest := bytes.Clone(h[pos+m : hlen-4])
		k := binary.PutUvarint(h[pos:], 4096)
		copy(h[pos+k:], rest)
		clear(h[pos+k+len(rest) : hlen-4])
		binary.LittleEndian.PutUint32(h[hlen-4:], crc32.ChecksumIEEE(h[:hlen-4]))
	}
	if err := guardAll(lie, splits["whole"]); err != nil {
		t.Fatalf("the walk refuses the altered file (%v); the test no longer builds the case", err)
	}
	for sname, split := range splits {
		out, dict, err := decodeGuarded(lie, split, 1<<30)
		if dict != 4096 {
			t.Fatalf("decode (%s): %d-byte window, want the 4 KiB the headers claim", sname, dict)
		}
		if err == nil && !bytes.Equal(out, payload) {
			t.Fatalf("decode (%s): a header claiming a smaller block changed the output", sname)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode (%s): %v, want the payload or ErrCorrupt", sname, err)
		}
	}
}
