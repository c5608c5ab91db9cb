package binarycache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// maxXZDict bounds the LZMA2 dictionary an xz block may declare. The xz
// decoder allocates whatever a block header asks for, up to 4 GiB, and the
// NAR file is not covered by the narinfo's signature. xz -9 uses 64 MiB;
// Nix's default preset (6) uses 8 MiB.
const maxXZDict = 64 << 20

// xzGuard walks the xz container format, given the file's bytes in order,
// and fails on anything that is not a well-formed xz file or on a block
// that declares an LZMA2 dictionary larger than max. It tells which bytes
// are a block's LZMA2 data, so that xzReader can hand those, and only
// those, to an LZMA2 decoder: the decoder never parses the container
// itself, and so cannot read a block header the walk did not check (an
// LZMA2 decoder need not consume exactly the compressed size a chunk
// header declares, and what it leaves must not become a new structure).
//
// The layout follows "The .xz File Format", version 1.2.1
// (https://tukaani.org/xz/xz-file-format.txt): a stream is a 12-byte header,
// blocks, an index and a 12-byte footer; streams may be followed by stream
// padding (multiples of 4 zero bytes) and further streams. A block is a
// header (holding the filter flags, among them the LZMA2 dictionary size),
// LZMA2 data, padding to a multiple of 4 bytes and a check. LZMA2 data is a
// sequence of chunks, each with a header giving its size (section 5.3.1 and
// liblzma's lzma2_decoder.c), ending with a 0x00 byte, so a block without
// sizes in its header can be walked without decoding it.
type xzGuard struct {
	where string
	max   uint64

	st   xzState
	buf  []byte // the structure being collected
	need int    // bytes buf must hold before step parses it
	skip uint64 // opaque bytes (chunk data, a check) to pass first
	off  uint64 // bytes walked so far, for messages

	check    uint64  // size of a block's check, from the stream flags
	flags    [2]byte // stream flags, which the footer repeats
	blocks   uint64  // blocks in the current stream
	blockLen uint64  // bytes of the current block so far, for its padding
	dict     uint64  // the current block's LZMA2 dictionary size
	size     uint64  // the current block's uncompressed size, 0 when its header does not say
	idxLen   uint64  // bytes of the index so far, for its padding
	left     uint64  // index varints still to read
}

type xzState int

const (
	xzStreamHeader xzState = iota
	xzBlockStart           // a block header's size byte, or the index indicator
	xzBlockHeader
	xzChunk // an LZMA2 chunk header, or (skip) chunk data
	xzBlockPadding
	xzIndexCount
	xzIndexRecord
	xzIndexEnd // index padding and CRC32
	xzFooter
	xzStreamPadding // after a footer: padding, another stream, or the end
)

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// xzCheckSizes are the sizes of a block's check by check ID (section
// 3.4 of the spec).
var xzCheckSizes = [16]uint64{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}

func newXZGuard(where string, max uint64) *xzGuard {
	return &xzGuard{where: where, max: max, st: xzStreamHeader, need: 12, buf: make([]byte, 0, 64)}
}

// inData says whether the next byte belongs to a block's LZMA2 data: its
// chunks and their end marker.
func (g *xzGuard) inData() bool {
	return g.st == xzChunk
}

// end checks that the file may end here.
func (g *xzGuard) end() error {
	if g.st != xzStreamPadding || len(g.buf) != 0 || g.skip != 0 {
		return g.corrupt("the file ends inside a stream")
	}
	return nil
}

// feed walks the longest prefix of p whose bytes are all LZMA2 data or all
// not, and returns its length; a block's LZMA2 data is one run of bytes,
// with container bytes (its header) before it and (its check, the next
// block header or the index) after it.
func (g *xzGuard) feed(p []byte) (int, error) {
	data, n := g.inData(), 0
	for n < len(p) && g.inData() == data {
		if g.skip > 0 {
			k := min(uint64(len(p)-n), g.skip)
			g.skip -= k
			g.off += k
			n += int(k)
			continue
		}
		k := min(len(p)-n, g.need-len(g.buf))
		g.buf = append(g.buf, p[n:n+k]...)
		g.off += uint64(k)
		n += k
		// step leaves buf shorter than need (every structure is at least
		// one byte), so one call per complete structure is enough.
		if len(g.buf) == g.need {
			if err := g.step(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// next starts collecting a structure of need bytes in state st, after skip
// opaque bytes.
func (g *xzGuard) next(st xzState, need int, skip uint64) {
	g.st, g.need, g.skip, g.buf = st, need, skip, g.buf[:0]
}

func (g *xzGuard) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s: not a valid xz file: %s (at byte %d)", ErrCorrupt, g.where, fmt.Sprintf(format, args...), g.off)
}

// step parses the complete structure in buf and says what comes next.
func (g *xzGuard) step() error {
	b := g.buf
	switch g.st {
	case xzStreamHeader:
		if !bytes.Equal(b[:6], xzMagic) {
			return g.corrupt("no stream header magic")
		}
		if b[6] != 0 || b[7]&0xf0 != 0 || crc32.ChecksumIEEE(b[6:8]) != binary.LittleEndian.Uint32(b[8:12]) {
			return g.corrupt("bad stream flags")
		}
		g.flags = [2]byte{b[6], b[7]}
		g.check = xzCheckSizes[b[7]&0x0f]
		g.blocks = 0
		g.next(xzBlockStart, 1, 0)

	case xzBlockStart:
		if b[0] == 0 {
			g.idxLen = 1
			g.next(xzIndexCount, 1, 0)
			return nil
		}
		g.st, g.need = xzBlockHeader, (int(b[0])+1)*4

	case xzBlockHeader:
		if err := g.blockHeader(b); err != nil {
			return err
		}
		g.blocks++
		g.blockLen = uint64(len(b))
		g.next(xzChunk, 1, 0)

	case xzChunk:
		c := b[0]
		var n int
		switch {
		case c == 0x00:
			n = 1
		case c == 0x01 || c == 0x02:
			n = 3
		case c < 0x80:
			return g.corrupt("LZMA2 chunk control byte %#02x", c)
		case c < 0xc0:
			n = 5
		default:
			n = 6
		}
		if len(b) < n {
			g.need = n
			return nil
		}
		g.blockLen += uint64(n)
		var data uint64
		switch {
		case c == 0x00:
			if pad := (4 - g.blockLen%4) % 4; pad > 0 {
				g.next(xzBlockPadding, int(pad), 0)
			} else {
				g.next(xzBlockStart, 1, g.check)
			}
			return nil
		case c < 0x80:
			data = uint64(binary.BigEndian.Uint16(b[1:3])) + 1
		default:
			data = uint64(binary.BigEndian.Uint16(b[3:5])) + 1
		}
		g.blockLen += data
		g.next(xzChunk, 1, data)

	case xzBlockPadding:
		if !allZero(b) {
			return g.corrupt("block padding is not zero")
		}
		g.next(xzBlockStart, 1, g.check)

	case xzIndexCount, xzIndexRecord:
		v, done, err := g.varint()
		if err != nil || !done {
			return err
		}
		if g.st == xzIndexCount {
			if v != g.blocks {
				return g.corrupt("the index lists %d blocks, the stream has %d", v, g.blocks)
			}
			g.left = 2 * v
		} else {
			g.left--
		}
		if g.left > 0 {
			g.next(xzIndexRecord, 1, 0)
			return nil
		}
		g.next(xzIndexEnd, int((4-g.idxLen%4)%4)+4, 0)

	case xzIndexEnd:
		if !allZero(b[:len(b)-4]) {
			return g.corrupt("index padding is not zero")
		}
		g.next(xzFooter, 12, 0)

	case xzFooter:
		if b[10] != 'Y' || b[11] != 'Z' || b[8] != g.flags[0] || b[9] != g.flags[1] {
			return g.corrupt("bad stream footer")
		}
		g.next(xzStreamPadding, 4, 0)

	case xzStreamPadding:
		switch {
		case allZero(b):
			g.next(xzStreamPadding, 4, 0)
		case b[0] == xzMagic[0]:
			g.st, g.need = xzStreamHeader, 12
		default:
			return g.corrupt("data after a stream")
		}
	}
	return nil
}

// varint reads one of the index's multibyte integers (section 1.2), which
// arrive in buf a byte at a time.
func (g *xzGuard) varint() (v uint64, done bool, err error) {
	b := g.buf
	last := b[len(b)-1]
	if last&0x80 != 0 {
		if len(b) == 9 {
			return 0, false, g.corrupt("multibyte integer longer than 9 bytes")
		}
		g.need++
		return 0, false, nil
	}
	if len(b) > 1 && last == 0 {
		return 0, false, g.corrupt("multibyte integer not in its shortest form")
	}
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
	}
	g.idxLen += uint64(len(b))
	return v, true, nil
}

// blockHeader checks a block header (section 3.1) and the dictionary size
// of its LZMA2 filter, which must be the last one.
func (g *xzGuard) blockHeader(b []byte) error {
	end := len(b) - 4
	if crc32.ChecksumIEEE(b[:end]) != binary.LittleEndian.Uint32(b[end:]) {
		return g.corrupt("block header CRC32 does not match")
	}
	flags := b[1]
	if flags&0x3c != 0 {
		return g.corrupt("reserved block flags %#02x", flags)
	}
	if flags&3 != 0 {
		// Nix writes LZMA2 alone; only that is decoded here.
		return g.corrupt("a block has %d filters, not LZMA2 alone", flags&3+1)
	}
	pos := 2
	uvarint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && pos < end; i++ {
			c := b[pos]
			pos++
			v |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	g.size = 0
	for i, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			v, ok := uvarint()
			if !ok {
				return g.corrupt("bad size in a block header")
			}
			if i == 1 {
				g.size = v
			}
		}
	}
	var id uint64
	for range int(flags&3) + 1 {
		var ok bool
		var size uint64
		if id, ok = uvarint(); !ok {
			return g.corrupt("bad filter ID in a block header")
		}
		if size, ok = uvarint(); !ok || size > uint64(end-pos) {
			return g.corrupt("bad filter properties size in a block header")
		}
		props := b[pos : pos+int(size)]
		pos += int(size)
		if id != 0x21 {
			continue
		}
		if len(props) != 1 || props[0] > 40 {
			return g.corrupt("bad LZMA2 filter properties")
		}
		g.dict = lzma2Dict(props[0])
		if g.dict > g.max {
			return fmt.Errorf("%w: %s: an xz block declares an LZMA2 dictionary of %d bytes, more than the %d bytes allowed", ErrCorrupt, g.where, g.dict, g.max)
		}
	}
	if id != 0x21 {
		return g.corrupt("the last filter of a block is %#x, not LZMA2", id)
	}
	if !allZero(b[pos:end]) {
		return g.corrupt("block header padding is not zero")
	}
	return nil
}

// lzma2Dict is the dictionary size an LZMA2 properties byte (at most 40)
// encodes (section 5.3.1).
func lzma2Dict(p byte) uint64 {
	if p == 40 {
		return 1<<32 - 1
	}
	return uint64(2|p&1) << (p/2 + 11)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// xzReader decompresses an xz file. The walk of xzGuard is the only
// parser of the container: each block's LZMA2 data, as the walk delimits
// it, goes to its own LZMA2 decoder, made with the dictionary size the
// walk checked. The decoder must end exactly where the walk says the data
// ends. Neither the blocks' checks nor the index sizes are verified: the
// caller checks the hash and size of the output.
type xzReader struct {
	g    *xzGuard
	r    io.Reader
	buf  []byte
	in   []byte // unwalked input, but for its first data bytes
	data int    // bytes at the front of in walked as the current block's LZMA2 data
	eof  bool   // r is used up
	dec  *lzma.Reader2
	err  error // sticky

	maxDict uint64 // the largest dictionary a decoder was made with
}

func newXZReader(r io.Reader, where string, max uint64) *xzReader {
	return &xzReader{g: newXZGuard(where, max), r: r, buf: make([]byte, 64<<10)}
}

func (x *xzReader) fill() error {
	n, err := x.r.Read(x.buf)
	x.in = x.buf[:n]
	if err == io.EOF {
		x.eof = true
		err = nil
	}
	return err
}

func (x *xzReader) Read(p []byte) (int, error) {
	if x.err != nil {
		return 0, x.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if x.dec != nil {
			n, err := x.dec.Read(p)
			switch {
			case x.err != nil: // the walk failed under the decoder
				return n, x.err
			case err == io.EOF:
				if x.data > 0 || x.g.inData() {
					x.err = x.g.corrupt("the LZMA2 data of a block ends before its end marker")
					return n, x.err
				}
				x.dec = nil
			case err != nil:
				x.err = x.g.corrupt("LZMA2 data: %v", err)
				return n, x.err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if x.g.inData() {
			dict := x.g.dict // at most max: the walk refused the block otherwise
			// A block never refers back further than its own start, so a
			// block that declares its size (as parallel encoders write
			// them, 3 dictionaries long by default) needs no bigger
			// window: allocating and clearing the whole declared
			// dictionary for each block is most of the cost of decoding
			// small blocks. A header that lies about the size makes the
			// decoder fail on a distance it cannot reach, never decode
			// differently.
			if s := x.g.size; s != 0 && s < dict {
				dict = max(s, lzma.MinDictCap)
			}
			x.maxDict = max(x.maxDict, dict)
			dec, err := lzma.Reader2Config{DictCap: int(dict)}.NewReader2(xzBlockData{x})
			if x.err != nil {
				return 0, x.err
			}
			if err != nil {
				x.err = x.g.corrupt("LZMA2 data: %v", err)
				return 0, x.err
			}
			x.dec = dec
			continue
		}
		if len(x.in) == 0 {
			if x.eof {
				if x.err = x.g.end(); x.err == nil {
					x.err = io.EOF
				}
				return 0, x.err
			}
			if x.err = x.fill(); x.err != nil {
				return 0, x.err
			}
			continue
		}
		n, err := x.g.feed(x.in)
		x.in = x.in[n:]
		if err != nil {
			x.err = err
			return 0, err
		}
	}
}

// xzBlockData is the LZMA2 data of the block being decoded: it ends where
// the walk says the data ends.
type xzBlockData struct{ x *xzReader }

func (b xzBlockData) Read(p []byte) (int, error) {
	x := b.x
	if x.err != nil {
		return 0, x.err
	}
	for x.data == 0 {
		if !x.g.inData() {
			return 0, io.EOF
		}
		if len(x.in) == 0 {
			if x.eof {
				x.err = x.g.end()
				return 0, x.err
			}
			if x.err = x.fill(); x.err != nil {
				return 0, x.err
			}
			continue
		}
		n, err := x.g.feed(x.in)
		x.data = n
		if err != nil {
			x.err = err
			return 0, err
		}
	}
	n := copy(p, x.in[:x.data])
	x.in = x.in[n:]
	x.data -= n
	return n, nil
}
