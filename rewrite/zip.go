package rewrite

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// readerWriterAt is where a container's rewritten bytes are patched: a
// spool file or, for a small file, memory.
type readerWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// memAt is an in-memory readerWriterAt of fixed size.
type memAt []byte

func (m memAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write outside the buffer")
	}
	return copy(m[off:], p), nil
}

// offsetAt shifts a readerWriterAt by base bytes.
type offsetAt struct {
	f    readerWriterAt
	base int64
}

func (o offsetAt) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, o.base+off) }
func (o offsetAt) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, o.base+off) }

const (
	zipLocalLen   = 30
	zipCentralLen = 46
	zipEndLen     = 22
	zip64LocLen   = 20
	zip64EndLen   = 56
	zipMaxComment = 0xffff
	zipCompareBuf = 32 << 10
)

// fixer fixes what padded rewriting broke in one container (an archive,
// or an archive inside one). orig holds the input, out the same bytes after
// padded replacement, both size bytes long; patch writes into out. The
// structure is read from orig, and every structural field is checked to be
// the same in both, so a store path that reached into one is refused
// rather than trusted.
type fixer struct {
	orig, out io.ReaderAt
	patch     io.WriterAt
	size      int64
	depth     int    // how many containers this one is inside
	a, b      []byte // compare buffers, shared with nested fixers
}

func newFixer(orig, out io.ReaderAt, patch io.WriterAt, size int64) *fixer {
	return &fixer{orig: orig, out: out, patch: patch, size: size,
		a: make([]byte, zipCompareBuf), b: make([]byte, zipCompareBuf)}
}

func zipRefusal(format string, args ...any) error {
	return &FormatError{Format: "zip", Reason: fmt.Sprintf(format, args...)}
}

// sameAt reports whether orig and out hold the same n bytes at off.
func (z *fixer) sameAt(off, n int64) (bool, error) {
	for n > 0 {
		k := min(n, int64(len(z.a)))
		if _, err := z.orig.ReadAt(z.a[:k], off); err != nil {
			return false, err
		}
		if _, err := z.out.ReadAt(z.b[:k], off); err != nil {
			return false, err
		}
		if !bytes.Equal(z.a[:k], z.b[:k]) {
			return false, nil
		}
		off += k
		n -= k
	}
	return true, nil
}

// read reads n bytes of orig at off into a fresh slice; n is small.
func (z *fixer) read(off int64, n int) ([]byte, error) {
	if off < 0 || off+int64(n) > z.size {
		return nil, io.ErrUnexpectedEOF
	}
	b := make([]byte, n)
	_, err := z.orig.ReadAt(b, off)
	return b, err
}

// zipEnd is what the end of central directory records say.
type zipEnd struct {
	entries  uint64
	cdSize   int64
	cdOffset int64 // as recorded, relative to the archive's start
	cdPos    int64 // where the central directory is in the file
	recStart int64 // first byte of the end records
}

func (z *fixer) end() (zipEnd, error) {
	var e zipEnd
	tailLen := min(z.size, zipEndLen+zipMaxComment)
	tail, err := z.read(z.size-tailLen, int(tailLen))
	if err != nil {
		return e, fmt.Errorf("read zip end: %w", err)
	}
	// The end record is the last thing in the file: its comment length
	// must reach exactly to the end.
	pos := -1
	for i := len(tail) - zipEndLen; i >= 0; i-- {
		if string(tail[i:i+4]) == "PK\x05\x06" && i+zipEndLen+int(binary.LittleEndian.Uint16(tail[i+20:])) == len(tail) {
			pos = i
			break
		}
	}
	if pos < 0 {
		return e, zipRefusal("no end of central directory record at the end of the file")
	}
	rec := tail[pos : pos+zipEndLen]
	endPos := z.size - tailLen + int64(pos)
	if ok, err := z.sameAt(endPos, zipEndLen); err != nil || !ok {
		return e, zipRefusal("a store path reaches into the end of central directory record")
	}
	if binary.LittleEndian.Uint16(rec[4:]) != 0 || binary.LittleEndian.Uint16(rec[6:]) != 0 {
		return e, zipRefusal("multi-disk archives are not supported")
	}
	e.entries = uint64(binary.LittleEndian.Uint16(rec[10:]))
	e.cdSize = int64(binary.LittleEndian.Uint32(rec[12:]))
	e.cdOffset = int64(binary.LittleEndian.Uint32(rec[16:]))
	e.recStart = endPos
	if e.entries == 0xffff || e.cdSize == 0xffffffff || e.cdOffset == 0xffffffff {
		if endPos < zip64LocLen {
			return e, zipRefusal("zip64 locator missing")
		}
		loc, err := z.read(endPos-zip64LocLen, zip64LocLen)
		if err != nil || string(loc[:4]) != "PK\x06\x07" {
			return e, zipRefusal("zip64 locator missing")
		}
		// The locator records the zip64 end record's offset relative to
		// the archive's start, which is not known yet; the record sits
		// right before the locator.
		e64Pos := endPos - zip64LocLen - zip64EndLen
		rec64, err := z.read(e64Pos, zip64EndLen)
		if err != nil || string(rec64[:4]) != "PK\x06\x06" {
			return e, zipRefusal("zip64 end of central directory record missing")
		}
		for _, r := range [][2]int64{{e64Pos, zip64EndLen}, {endPos - zip64LocLen, zip64LocLen}} {
			if ok, err := z.sameAt(r[0], r[1]); err != nil || !ok {
				return e, zipRefusal("a store path reaches into the zip64 end records")
			}
		}
		e.entries = binary.LittleEndian.Uint64(rec64[32:])
		e.cdSize = int64(binary.LittleEndian.Uint64(rec64[40:]))
		e.cdOffset = int64(binary.LittleEndian.Uint64(rec64[48:]))
		e.recStart = e64Pos
	}
	if e.cdSize < 0 || e.cdOffset < 0 || e.cdSize > e.recStart {
		return e, zipRefusal("central directory size out of range")
	}
	e.cdPos = e.recStart - e.cdSize
	if e.cdPos-e.cdOffset < 0 {
		return e, zipRefusal("central directory offset out of range")
	}
	return e, nil
}

// zipMember is one central directory entry.
type zipMember struct {
	name       string
	cdPos      int64 // of its central directory header
	flags      uint16
	method     uint16
	crc        uint32
	csize      int64
	usize      int64
	local      int64 // of its local header, in the file
	zip64Local bool
}

// fixZip patches the CRC-32 of every member whose data changed, or
// refuses the archive.
func (z *fixer) fixZip() error {
	e, err := z.end()
	if err != nil {
		return err
	}
	// Offsets in the archive are relative to its start, which is not the
	// file's when something precedes it (a jmod's header, a stub).
	base := e.cdPos - e.cdOffset
	apkSig := false
	if e.cdPos >= 16 {
		magic, err := z.read(e.cdPos-16, 16)
		if err != nil {
			return fmt.Errorf("read zip: %w", err)
		}
		apkSig = string(magic) == "APK Sig Block 42"
	}

	cd := bufio.NewReaderSize(io.NewSectionReader(z.orig, e.cdPos, e.cdSize), 4096)
	pos := e.cdPos
	prevEnd := base
	signed, changed := "", ""
	var hdr [zipCentralLen]byte
	for i := uint64(0); i < e.entries; i++ {
		if _, err := io.ReadFull(cd, hdr[:]); err != nil {
			return zipRefusal("central directory shorter than its %d entries", e.entries)
		}
		if string(hdr[:4]) != "PK\x01\x02" {
			return zipRefusal("central directory entry %d has no signature", i)
		}
		m := zipMember{
			cdPos:  pos,
			flags:  binary.LittleEndian.Uint16(hdr[8:]),
			method: binary.LittleEndian.Uint16(hdr[10:]),
			crc:    binary.LittleEndian.Uint32(hdr[16:]),
			csize:  int64(binary.LittleEndian.Uint32(hdr[20:])),
			usize:  int64(binary.LittleEndian.Uint32(hdr[24:])),
			local:  int64(binary.LittleEndian.Uint32(hdr[42:])),
		}
		nameLen := int(binary.LittleEndian.Uint16(hdr[28:]))
		extraLen := int(binary.LittleEndian.Uint16(hdr[30:]))
		commentLen := int(binary.LittleEndian.Uint16(hdr[32:]))
		varLen := nameLen + extraLen + commentLen
		vari := make([]byte, varLen)
		if _, err := io.ReadFull(cd, vari); err != nil {
			return zipRefusal("central directory shorter than its %d entries", e.entries)
		}
		m.name = string(vari[:nameLen])
		extra := vari[nameLen : nameLen+extraLen]
		if err := m.zip64(extra); err != nil {
			return err
		}
		if m.csize < 0 || m.usize < 0 || m.local < 0 || m.local > z.size-base {
			return zipRefusal("member %q: size or offset out of range", m.name)
		}
		m.local += base
		if ok, err := z.sameAt(pos, zipCentralLen); err != nil || !ok {
			return zipRefusal("member %q: a store path reaches into its central directory header", m.name)
		}
		if ok, err := z.sameAt(pos+zipCentralLen+int64(nameLen), int64(extraLen)); err != nil || !ok {
			return zipRefusal("member %q: its central directory extra field holds a store path", m.name)
		}
		pos += zipCentralLen + int64(varLen)
		if isJarSignature(m.name) {
			signed = m.name
		}

		dataEnd, memberChanged, err := z.member(&m, prevEnd)
		if err != nil {
			return err
		}
		if memberChanged && changed == "" {
			changed = m.name
		}
		prevEnd = dataEnd
	}
	if prevEnd > e.cdPos {
		return zipRefusal("member data overlaps the central directory")
	}
	// Readers differ on where the central directory ends: some count the
	// end record's entries (modulo 65536 without zip64), some read its
	// whole size. Members only some of them see would keep old CRCs.
	if pos != e.cdPos+e.cdSize {
		if same, err := z.sameAt(0, z.size); err != nil || same {
			return err
		}
		return zipRefusal("the central directory is %d bytes, but its %d entries take %d: members beyond the count would not be fixed", e.cdSize, e.entries, pos-e.cdPos)
	}
	if changed != "" && signed != "" {
		return zipRefusal("member %q changed, and the archive is signed (%s): its digests would no longer match", changed, signed)
	}
	if changed != "" && apkSig {
		return zipRefusal("member %q changed, and the APK signing block covers it", changed)
	}
	return nil
}

// zip64 reads the zip64 extended information extra field, which holds the
// fields whose 32-bit value is all ones, in this order.
func (m *zipMember) zip64(extra []byte) error {
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		n := int(binary.LittleEndian.Uint16(extra[2:]))
		if 4+n > len(extra) {
			return zipRefusal("member %q: extra field overruns", m.name)
		}
		field := extra[4 : 4+n]
		extra = extra[4+n:]
		if id != 0x0001 {
			continue
		}
		for _, p := range []*int64{&m.usize, &m.csize, &m.local} {
			if *p != 0xffffffff {
				continue
			}
			if len(field) < 8 {
				return zipRefusal("member %q: zip64 field too short", m.name)
			}
			v := binary.LittleEndian.Uint64(field)
			if v > 1<<62 {
				return zipRefusal("member %q: zip64 value out of range", m.name)
			}
			*p = int64(v)
			field = field[8:]
		}
	}
	return nil
}

// isJarSignature reports whether name is a jar signature file, whose
// digests cover every member.
func isJarSignature(name string) bool {
	if !strings.HasPrefix(strings.ToUpper(name), "META-INF/") || strings.Count(name, "/") != 1 {
		return false
	}
	for _, ext := range []string{".SF", ".RSA", ".DSA", ".EC"} {
		if strings.HasSuffix(strings.ToUpper(name), ext) {
			return true
		}
	}
	return false
}

// member checks one member's local header and data and, if its data
// changed, patches its CRC-32 everywhere it is recorded. It returns where
// the member (with its data descriptor) ends.
func (z *fixer) member(m *zipMember, prevEnd int64) (int64, bool, error) {
	if m.local < prevEnd {
		return 0, false, zipRefusal("member %q: its local header overlaps the previous member (members out of order)", m.name)
	}
	lh, err := z.read(m.local, zipLocalLen)
	if err != nil || string(lh[:4]) != "PK\x03\x04" {
		return 0, false, zipRefusal("member %q: no local header at offset %d", m.name, m.local)
	}
	if ok, err := z.sameAt(m.local, zipLocalLen); err != nil || !ok {
		return 0, false, zipRefusal("member %q: a store path reaches into its local header", m.name)
	}
	nameLen := int64(binary.LittleEndian.Uint16(lh[26:]))
	extraLen := int64(binary.LittleEndian.Uint16(lh[28:]))
	data := m.local + zipLocalLen + nameLen + extraLen
	if data > z.size || m.csize > z.size-data {
		return 0, false, zipRefusal("member %q: data out of range", m.name)
	}
	extra, err := z.read(m.local+zipLocalLen+nameLen, int(extraLen))
	if err != nil {
		return 0, false, fmt.Errorf("read zip: %w", err)
	}
	m.zip64Local = hasExtra(extra, 0x0001)
	if ok, err := z.sameAt(m.local+zipLocalLen+nameLen, extraLen); err != nil || !ok {
		return 0, false, zipRefusal("member %q: its local extra field holds a store path", m.name)
	}
	// The local and central names were equal, so they must still be:
	// a store path cut by the end of one of them would change only it.
	if nameLen == int64(len(m.name)) {
		ln := make([]byte, nameLen)
		cn := make([]byte, nameLen)
		if _, err := z.out.ReadAt(ln, m.local+zipLocalLen); err != nil {
			return 0, false, fmt.Errorf("read zip: %w", err)
		}
		if _, err := z.out.ReadAt(cn, m.cdPos+zipCentralLen); err != nil {
			return 0, false, fmt.Errorf("read zip: %w", err)
		}
		on, _ := z.read(m.local+zipLocalLen, int(nameLen))
		if string(on) == m.name && !bytes.Equal(ln, cn) {
			return 0, false, zipRefusal("member %q: rewriting made its local and central names differ", m.name)
		}
	}

	end := data + m.csize
	descLen := int64(0)
	descCRC := int64(-1)
	if m.flags&0x8 != 0 {
		d, err := z.read(end, int(min(24, z.size-end)))
		if err != nil {
			return 0, false, fmt.Errorf("read zip: %w", err)
		}
		sizes := int64(8)
		if m.zip64Local {
			sizes = 16
		}
		switch {
		case len(d) >= 8 && string(d[:4]) == "PK\x07\x08" && binary.LittleEndian.Uint32(d[4:]) == m.crc:
			descCRC, descLen = end+4, 8+sizes
		case len(d) >= 4 && binary.LittleEndian.Uint32(d) == m.crc:
			descCRC, descLen = end, 4+sizes
		default:
			return 0, false, zipRefusal("member %q: data descriptor not found after its data", m.name)
		}
		if end+descLen > z.size {
			return 0, false, zipRefusal("member %q: data descriptor out of range", m.name)
		}
		if ok, err := z.sameAt(end, descLen); err != nil || !ok {
			return 0, false, zipRefusal("member %q: a store path reaches into its data descriptor", m.name)
		}
	}

	same, err := z.sameAt(data, m.csize)
	if err != nil {
		return 0, false, fmt.Errorf("read zip: %w", err)
	}
	if same {
		return end + descLen, false, nil
	}
	if m.flags&0x1 != 0 {
		return 0, false, zipRefusal("member %q is encrypted: its CRC-32 cannot be checked or recomputed", m.name)
	}
	if m.method != 0 {
		// A store path visible in compressed data sits in a stored
		// deflate block, which later blocks may copy from: padding it
		// moves what those copies read, so the member would decompress
		// to other bytes than the rewrite of its contents, under a CRC
		// recomputed to match. Checking that, and fixing archives nested
		// in the member, would mean decompressing (a bomb's worth of
		// work) and recompressing: refused instead.
		return 0, false, zipRefusal("member %q: a store path shows in its compressed (method %d) data; rewriting it there could change what later blocks decompress to", m.name, m.method)
	}
	// A stored archive (a jar in a fat jar) is fixed first: the outer CRC
	// covers its fixed bytes.
	if err := z.nested(data, m.csize, m.name); err != nil {
		return 0, false, nestedRefusal("zip", m.name, err)
	}
	oldCRC, err := memberCRC(z.orig, data, m, z.a)
	if err != nil {
		return 0, false, zipRefusal("member %q: %v", m.name, err)
	}
	if oldCRC != m.crc {
		return 0, false, zipRefusal("member %q: its CRC-32 does not match its data in the input", m.name)
	}
	newCRC, err := memberCRC(z.out, data, m, z.a)
	if err != nil {
		return 0, false, zipRefusal("member %q: after rewriting a store path in its compressed data: %v", m.name, err)
	}
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], newCRC)
	localCRC := binary.LittleEndian.Uint32(lh[14:])
	switch {
	case localCRC == m.crc:
		if _, err := z.patch.WriteAt(v[:], m.local+14); err != nil {
			return 0, false, fmt.Errorf("patch zip: %w", err)
		}
	case localCRC == 0 && m.flags&0x8 != 0:
		// Deferred to the data descriptor.
	default:
		return 0, false, zipRefusal("member %q: its local header and central directory disagree on its CRC-32", m.name)
	}
	if _, err := z.patch.WriteAt(v[:], m.cdPos+16); err != nil {
		return 0, false, fmt.Errorf("patch zip: %w", err)
	}
	if descCRC >= 0 {
		if _, err := z.patch.WriteAt(v[:], descCRC); err != nil {
			return 0, false, fmt.Errorf("patch zip: %w", err)
		}
	}
	return end + descLen, true, nil
}

func hasExtra(extra []byte, want uint16) bool {
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		n := int(binary.LittleEndian.Uint16(extra[2:]))
		if id == want {
			return true
		}
		if 4+n > len(extra) {
			return false
		}
		extra = extra[4+n:]
	}
	return false
}

// memberCRC is the CRC-32 of a member's uncompressed data, checking that it
// has the recorded uncompressed size.
func memberCRC(r io.ReaderAt, data int64, m *zipMember, buf []byte) (uint32, error) {
	var src io.Reader = io.NewSectionReader(r, data, m.csize)
	switch m.method {
	case 0:
		if m.csize != m.usize {
			return 0, fmt.Errorf("stored with %d bytes but %d uncompressed", m.csize, m.usize)
		}
	case 8:
		fr := flate.NewReader(src)
		defer fr.Close()
		src = fr
	default:
		return 0, fmt.Errorf("compressed with method %d, which the rewriter cannot decompress to recompute the CRC-32", m.method)
	}
	h := crc32.NewIEEE()
	n, err := io.CopyBuffer(h, io.LimitReader(src, m.usize+1), buf)
	if err != nil {
		return 0, fmt.Errorf("decompress: %w", err)
	}
	if n != m.usize {
		return 0, fmt.Errorf("%d bytes uncompressed, the archive says %d", n, m.usize)
	}
	return h.Sum32(), nil
}
