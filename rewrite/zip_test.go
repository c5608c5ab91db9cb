package rewrite

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decross-store/decross-store/internal/testenv"
)

// zipModified is the fixed member time, so archives are byte-for-byte
// reproducible.
var zipModified = time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC)

// member describes one member of a test archive.
type member struct {
	name   string
	data   string
	method uint16 // zip.Store, zip.Deflate, or any other number (data kept as is)
	// stream writes the member with archive/zip's Create, which adds a
	// data descriptor; otherwise it is written raw, with the CRC in the
	// local header and flags as given.
	stream bool
	flags  uint16
	// visible deflates without compression, so the data appears as is in
	// the compressed stream.
	visible bool
	badCRC  bool // record a wrong CRC-32
}

// paddedAll is a plain ReplaceAll of every test replacement's padded form:
// the oracle for same-length rewriting.
func paddedAll(b []byte, repls []Replacement) []byte {
	for _, rp := range repls {
		b = bytes.ReplaceAll(b, []byte(rp.From), []byte(padded(rp.From, rp.To)))
	}
	return b
}

// exactAll is the oracle for exact rewriting.
func exactAll(b []byte, repls []Replacement) []byte {
	for _, rp := range repls {
		b = bytes.ReplaceAll(b, []byte(rp.From), []byte(rp.To))
	}
	return b
}

func buildZip(t testing.TB, members ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, m := range members {
		if m.stream {
			fw, err := w.CreateHeader(&zip.FileHeader{Name: m.name, Method: m.method, Modified: zipModified})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(fw, m.data); err != nil {
				t.Fatal(err)
			}
			continue
		}
		raw := []byte(m.data)
		if m.method == zip.Deflate {
			level := flate.BestCompression
			if m.visible {
				level = flate.NoCompression
			}
			var c bytes.Buffer
			fw, _ := flate.NewWriter(&c, level)
			_, _ = io.WriteString(fw, m.data)
			if err := fw.Close(); err != nil {
				t.Fatal(err)
			}
			raw = c.Bytes()
		}
		sum := crc32.ChecksumIEEE([]byte(m.data))
		if m.badCRC {
			sum ^= 1
		}
		fw, err := w.CreateRaw(&zip.FileHeader{
			Name: m.name, Method: m.method, Flags: m.flags, Modified: zipModified,
			CRC32: sum, CompressedSize64: uint64(len(raw)), UncompressedSize64: uint64(len(m.data)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// buildZip64 writes, by hand, a one-member stored archive in zip64 form:
// sizes and offset in zip64 extra fields, zip64 end records.
func buildZip64(name, data string) []byte {
	le := binary.LittleEndian
	var b []byte
	sum := crc32.ChecksumIEEE([]byte(data))
	b = append(b, "PK\x03\x04"...)
	b = le.AppendUint16(b, 45)
	b = le.AppendUint16(b, 0) // flags
	b = le.AppendUint16(b, 0) // stored
	b = le.AppendUint32(b, 0) // time, date
	b = le.AppendUint32(b, sum)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint16(b, uint16(len(name)))
	b = le.AppendUint16(b, 20)
	b = append(b, name...)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 16)
	b = le.AppendUint64(b, uint64(len(data)))
	b = le.AppendUint64(b, uint64(len(data)))
	b = append(b, data...)
	cd := len(b)
	b = append(b, "PK\x01\x02"...)
	b = le.AppendUint16(b, 45)
	b = le.AppendUint16(b, 45)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, sum)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint16(b, uint16(len(name)))
	b = le.AppendUint16(b, 28)
	b = le.AppendUint16(b, 0) // comment
	b = le.AppendUint16(b, 0) // disk
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0xffffffff)
	b = append(b, name...)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 24)
	b = le.AppendUint64(b, uint64(len(data)))
	b = le.AppendUint64(b, uint64(len(data)))
	b = le.AppendUint64(b, 0)
	cdSize := len(b) - cd
	end64 := len(b)
	b = append(b, "PK\x06\x06"...)
	b = le.AppendUint64(b, 44)
	b = le.AppendUint16(b, 45)
	b = le.AppendUint16(b, 45)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, 1)
	b = le.AppendUint64(b, 1)
	b = le.AppendUint64(b, uint64(cdSize))
	b = le.AppendUint64(b, uint64(cd))
	b = append(b, "PK\x06\x07"...)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, uint64(end64))
	b = le.AppendUint32(b, 1)
	b = append(b, "PK\x05\x06"...)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0xffff)
	b = le.AppendUint16(b, 0xffff)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint32(b, 0xffffffff)
	b = le.AppendUint16(b, 0)
	return b
}

// zipMembers reads every member of a zip archive; reading to the end makes
// archive/zip check each CRC-32. Members it cannot read are in bad.
func zipMembers(t testing.TB, b []byte) (ok map[string][]byte, bad map[string]error) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("archive/zip cannot open the archive: %v", err)
	}
	ok, bad = make(map[string][]byte), make(map[string]error)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			bad[f.Name] = err
			continue
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			bad[f.Name] = err
			continue
		}
		ok[f.Name] = data
	}
	return ok, bad
}

// pythonZipTest runs Python's zipfile checker (what python3 -m zipfile -t
// runs) on archives, in one process: it reads every member and checks its
// CRC-32.
func pythonZipTest(t *testing.T, archives map[string][]byte) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		testenv.SkipOrFail(t, "python3 not installed")
		return
	}
	dir := t.TempDir()
	args := []string{"-c", `import sys, zipfile
for f in sys.argv[1:]:
    bad = zipfile.ZipFile(f).testzip()
    if bad is not None:
        sys.exit(f"{f}: bad member {bad}")
print("Done testing")`}
	i := 0
	for name, b := range archives {
		f := filepath.Join(dir, strconv.Itoa(i)+".zip")
		i++
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, f)
		t.Logf("%s: %s", f, name)
	}
	out, err := exec.Command(py, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Done testing") {
		t.Errorf("python3 zipfile rejects an output: %v\n%s", err, out)
	}
}

// rewriteFile rewrites a NAR holding one file of the given contents, named
// name at the root of a directory, and returns the file's new contents.
func rewriteFile(t testing.TB, r *Rewriter, name string, contents []byte) ([]byte, error) {
	t.Helper()
	out, err := rewrite(r, narOf(dir(ent(name, reg(string(contents))))))
	if err != nil {
		return nil, err
	}
	es := listNAR(t, out)
	return []byte(es[1].Contents), nil
}

func TestRewriteZip(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	script := "#!" + bashX + "/bin/sh\nexec " + helloX + "/bin/hello\n"
	big := strings.Repeat("x", 70<<10) + ld // beyond the default text limit
	// A store path whose name runs into the next local header's signature.
	intoHeader := storePath("into-header", "libPK")
	tests := []struct {
		name    string
		archive []byte
		repls   []Replacement
		hidden  []string // members whose store paths are compressed, so kept
		wantErr string   // part of the FormatError's reason; "" for success
		// encrypted archives are left out of Python's check, which
		// wants a password.
		encrypted bool
	}{
		{
			name: "stored members, raw",
			archive: buildZip(t,
				member{name: "META-INF/MANIFEST.MF", data: "Manifest-Version: 1.0\n"},
				member{name: "bin/run", data: script},
				member{name: "lib/ld.path", data: ld + "\x00" + ld},
			),
		},
		{
			name: "stored members with data descriptors",
			archive: buildZip(t,
				member{name: "a", data: script, stream: true},
				member{name: "b", data: "no path", stream: true},
				member{name: "c", data: ld, flags: 0x8},
			),
		},
		{
			name: "deflated member hides its path, stored one is fixed",
			archive: buildZip(t,
				member{name: "deflated", data: strings.Repeat(script, 20), method: zip.Deflate, stream: true},
				member{name: "stored", data: script},
			),
			hidden: []string{"deflated"},
		},
		{
			// Later deflate blocks may copy from the stored one, so padding
			// it could change what they decompress to.
			name: "deflate stored block shows its path",
			archive: buildZip(t,
				member{name: "visible", data: script, method: zip.Deflate, visible: true},
			),
			wantErr: `member "visible": a store path shows in its compressed (method 8) data`,
		},
		{
			name:    "data descriptor without its signature",
			archive: stripDescriptorSignature(t, buildZip(t, member{name: "a", data: ld, stream: true})),
		},
		{
			name:    "member of a size beyond the text limit",
			archive: buildZip(t, member{name: "big", data: big}, member{name: "small", data: ld}),
		},
		{
			name:    "zip64 records",
			archive: buildZip64("lib/ld.path", ld),
		},
		{
			name:    "jmod header before the archive",
			archive: append([]byte("JM\x01\x00"), buildZip(t, member{name: "classes/x", data: script})...),
		},
		{
			name:      "unchanged encrypted member is left alone",
			archive:   buildZip(t, member{name: "secret", data: "ciphertext", flags: 0x1}, member{name: "plain", data: ld}),
			encrypted: true,
		},
		{
			name:    "unchanged member with a wrong CRC is left alone",
			archive: buildZip(t, member{name: "bad", data: "no path", badCRC: true}, member{name: "good", data: ld}),
		},
		{
			name:    "encrypted member changed",
			archive: buildZip(t, member{name: "secret", data: ld, flags: 0x1}),
			wantErr: `member "secret" is encrypted`,
		},
		{
			name:    "unknown compression method",
			archive: buildZip(t, member{name: "bz", data: ld, method: 12}),
			wantErr: "method 12",
		},
		{
			name:    "changed member's CRC was already wrong",
			archive: buildZip(t, member{name: "bad", data: ld, badCRC: true}),
			wantErr: "does not match its data in the input",
		},
		{
			name: "signed jar",
			archive: buildZip(t,
				member{name: "META-INF/MANIFEST.MF", data: "Manifest-Version: 1.0\n"},
				member{name: "META-INF/KEY.SF", data: "Signature-Version: 1.0\n"},
				member{name: "lib/ld.path", data: ld},
			),
			wantErr: "signed (META-INF/KEY.SF)",
		},
		{
			name:    "store path running into a local header",
			archive: buildZip(t, member{name: "a", data: "\x00" + intoHeader[:len(intoHeader)-2]}, member{name: "b", data: "x"}),
			repls:   []Replacement{{From: intoHeader, To: storePath("into-header-native", "l")}},
			wantErr: `member "b": a store path reaches into its local header`,
		},
	}
	forPython := make(map[string][]byte)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repls := tt.repls
			if repls == nil {
				repls = testRepls
			}
			in, inBad := zipMembers(t, tt.archive)
			var first []byte
			// In memory (the archive fits the text limit) and spooled
			// (every file is over it), with reads split everywhere.
			for _, opts := range []Options{{TextMax: MaxTextMax}, {TextMax: -1, TempDir: t.TempDir()}} {
				r := mustNew(t, repls, opts)
				r.chunk = 7
				got, err := rewriteFile(t, r, "a.jar", tt.archive)
				if tt.wantErr != "" {
					var fe *FormatError
					if !errors.As(err, &fe) || fe.File != "/a.jar" || fe.Format != "zip" || !strings.Contains(fe.Reason, tt.wantErr) {
						t.Fatalf("TextMax %d: got error %v, want a zip FormatError in /a.jar saying %q", opts.TextMax, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("TextMax %d: %v", opts.TextMax, err)
				}
				if len(got) != len(tt.archive) {
					t.Fatalf("TextMax %d: size %d became %d", opts.TextMax, len(tt.archive), len(got))
				}
				if first == nil {
					first = got
				} else if !bytes.Equal(got, first) {
					t.Fatalf("spooled output differs from the in-memory one")
				}
			}
			if tt.wantErr != "" {
				return
			}
			out, outBad := zipMembers(t, first)
			for name, err := range inBad {
				if outBad[name] == nil {
					t.Errorf("member %s: unreadable in the input (%v), readable in the output", name, err)
				}
			}
			for name, data := range in {
				want := paddedAll(bytes.Clone(data), repls)
				for _, h := range tt.hidden {
					if h == name {
						want = data
					}
				}
				if !bytes.Equal(out[name], want) {
					t.Errorf("member %s: got %q (%v), want %q", name, out[name], outBad[name], want)
				}
			}
			if len(inBad) == 0 && !tt.encrypted {
				forPython[tt.name] = first
			}
		})
	}
	pythonZipTest(t, forPython)
}

// TestRewriteZipInsideOtherFile covers an archive appended to another file,
// as self-extractors are: fixed when the file fits the text limit (it is
// whole in memory), refused beyond it unless the store path is before the
// archive.
func TestRewriteZipInsideOtherFile(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	stub := "\x7fELF\x00" + ld + "\x00"
	archive := buildZip(t, member{name: "lib/ld.path", data: ld})
	plain := buildZip(t, member{name: "x", data: "no path"})
	tests := []struct {
		name    string
		textMax int64
		file    string
		wantErr string
	}{
		{"small file, path in the archive", 0, stub + string(archive), ""},
		{"large file, path only in the stub", -1, stub + string(plain), ""},
		{"large file, path in the archive", -1, stub + string(archive), "starts at byte " + strconv.Itoa(len(stub))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, testRepls, Options{TextMax: tt.textMax})
			got, err := rewriteFile(t, r, "installer", []byte(tt.file))
			if tt.wantErr != "" {
				var fe *FormatError
				if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tt.wantErr) {
					t.Fatalf("got %v, want a FormatError saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, paddedAll([]byte(stub), testRepls)) {
				t.Errorf("stub not rewritten: %q", got[:len(stub)])
			}
			zr, err := zip.NewReader(bytes.NewReader(got), int64(len(got)))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range zr.File {
				rc, err := f.Open()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(rc); err != nil {
					t.Errorf("member %s: %v", f.Name, err)
				}
				rc.Close()
			}
		})
	}
}

// TestRewriteNestedArchives covers archives stored inside archives, as fat
// jars keep their libraries: the inner archive is fixed before the outer
// CRC is computed over it, and a refusal names the member it is in.
func TestRewriteNestedArchives(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	inner := buildZip(t, member{name: "lib/ld.path", data: ld}, member{name: "x", data: "no path"})
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.NoCompression)
	_, _ = io.WriteString(zw, ld)
	_ = zw.Close()
	tests := []struct {
		name    string
		file    string
		archive []byte
		wantErr string
	}{
		{"jar in a jar", "app.jar", buildZip(t, member{name: "BOOT-INF/lib/inner.jar", data: string(inner)}, member{name: "y", data: ld}), ""},
		{"jar in a jar in a jar", "app.jar", buildZip(t, member{name: "mid.jar", data: string(buildZip(t, member{name: "inner.jar", data: string(inner)}))}), ""},
		{"jar in a tar", "src.tar", buildTar(t, tarMember{hdr: tar.Header{Name: "inner.jar", Typeflag: tar.TypeReg}, data: string(inner)}), ""},
		{"gzip in a jar", "app.jar", buildZip(t, member{name: "ld.gz", data: gz.String()}), `member "ld.gz", a gzip file: its compressed data holds a store path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, opts := range []Options{{TextMax: MaxTextMax}, {TextMax: -1, TempDir: t.TempDir()}} {
				r := mustNew(t, testRepls, opts)
				got, err := rewriteFile(t, r, tt.file, tt.archive)
				if tt.wantErr != "" {
					var fe *FormatError
					if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tt.wantErr) {
						t.Fatalf("TextMax %d: got %v, want a FormatError saying %q", opts.TextMax, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("TextMax %d: %v", opts.TextMax, err)
				}
				// Every archive at every level reads back with valid
				// checksums, and its leaves are the padded ReplaceAll.
				var check func(name string, b []byte)
				check = func(name string, b []byte) {
					switch {
					case bytes.HasPrefix(b, []byte("PK\x03\x04")):
						ok, bad := zipMembers(t, b)
						if len(bad) > 0 {
							t.Errorf("TextMax %d: %s: unreadable members %v", opts.TextMax, name, bad)
						}
						for n, data := range ok {
							check(name+"!"+n, data)
						}
					case len(b) >= tarBlock && isTarHeader(b[:tarBlock]):
						for _, m := range readTar(t, b) {
							check(name+"!"+m.hdr.Name, []byte(m.data))
						}
					case !bytes.Equal(b, paddedAll([]byte(ld), testRepls)) && !bytes.Equal(b, []byte("no path")):
						t.Errorf("TextMax %d: %s: got %q", opts.TextMax, name, b)
					}
				}
				check(tt.file, got)
			}
		})
	}
}

// TestRewriteSpoolLeavesNothing checks that a spooled archive leaves no
// file behind, whether it was served, refused or had a leftover, that the
// leftover check sees spooled output, and that an unusable spool directory
// is an error.
func TestRewriteSpoolLeavesNothing(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	tests := []struct {
		name    string
		archive []byte
		check   func(error) bool
	}{
		{"fixed", buildZip(t, member{name: "a", data: ld}), func(err error) bool { return err == nil }},
		{"refused", buildZip(t, member{name: "a", data: ld, flags: 0x1}), func(err error) bool {
			var fe *FormatError
			return errors.As(err, &fe)
		}},
		{"leftover", buildZip(t, member{name: "a", data: "\x00" + hashOf(other)}), func(err error) bool {
			var le *LeftoverError
			return errors.As(err, &le) && le.File == "/a.jar" && le.HashPart == hashOf(other)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			r := mustNew(t, testRepls, Options{TextMax: -1, TempDir: tmp, Forbidden: []string{other}})
			_, err := rewriteFile(t, r, "a.jar", tt.archive)
			if !tt.check(err) {
				t.Fatalf("unexpected result: %v", err)
			}
			left, err := os.ReadDir(tmp)
			if err != nil || len(left) != 0 {
				t.Errorf("spool directory holds %v (%v)", left, err)
			}
		})
	}
	r := mustNew(t, testRepls, Options{TextMax: -1, TempDir: filepath.Join(t.TempDir(), "missing")})
	if _, err := rewriteFile(t, r, "a.jar", tests[0].archive); err == nil || !strings.Contains(err.Error(), "spool /a.jar") {
		t.Errorf("missing spool directory: got %v", err)
	}
}

// stripDescriptorSignature drops the optional signature of the data
// descriptor of a one-member archive, and moves the central directory
// offset to match.
func stripDescriptorSignature(t testing.TB, b []byte) []byte {
	t.Helper()
	i := bytes.Index(b, []byte("PK\x07\x08"))
	end := len(b) - zipEndLen
	if i < 0 || string(b[end:end+4]) != "PK\x05\x06" || binary.LittleEndian.Uint16(b[end+10:]) != 1 {
		t.Fatal("not a one-member archive with a signed data descriptor")
	}
	out := append(bytes.Clone(b[:i]), b[i+4:]...)
	end -= 4
	binary.LittleEndian.PutUint32(out[end+16:], binary.LittleEndian.Uint32(out[end+16:])-4)
	return out
}

// TestRewriteZipEntryCount: an end record counting fewer entries than its
// central directory holds (as 65537 members without zip64 wrap to 1) is
// read one way by readers that count and another by readers that read the
// directory's size; a changed member beyond the count would keep its old
// CRC for the latter, so the archive is refused.
func TestRewriteZipEntryCount(t *testing.T) {
	ld := glibcX + "/lib/ld-linux-aarch64.so.1"
	b := buildZip(t, member{name: "a", data: "no path"}, member{name: "b", data: ld})
	end := len(b) - 22
	if string(b[end:end+4]) != "PK\x05\x06" {
		t.Fatal("no end record at the end of the archive")
	}
	binary.LittleEndian.PutUint16(b[end+8:], 1)
	binary.LittleEndian.PutUint16(b[end+10:], 1)
	for _, opts := range []Options{{TextMax: MaxTextMax}, {TextMax: -1, TempDir: t.TempDir()}} {
		_, err := rewriteFile(t, mustNew(t, testRepls, opts), "a.jar", b)
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "its 1 entries take") {
			t.Fatalf("TextMax %d: %v, want the entry count refused", opts.TextMax, err)
		}
	}
}
