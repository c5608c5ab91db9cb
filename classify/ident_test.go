package classify

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/binary"
	"os"
	"testing"

	"github.com/decross-store/decross-store/platform"
)

// machOHeader is the start of a little-endian 64-bit Mach-O file.
func machOHeader(cpu uint32) []byte {
	b := make([]byte, 32)
	binary.LittleEndian.PutUint32(b, 0xfeedfacf)
	binary.LittleEndian.PutUint32(b[4:], cpu)
	return b
}

// peHeader is the start of a PE file: a DOS header pointing at the PE
// signature, and a COFF header.
func peHeader(machine uint16) []byte {
	b := make([]byte, 0x80+24)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], machine)
	return b
}

func TestIdentify(t *testing.T) {
	elfOf := func(class, data byte, m uint16) []byte {
		b := []byte("\x7fELF\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00")
		b[elf.EI_CLASS], b[elf.EI_DATA] = class, data
		if data == 2 {
			binary.BigEndian.PutUint16(b[18:], m)
		} else {
			binary.LittleEndian.PutUint16(b[18:], m)
		}
		return b
	}
	bigEndianMachO := []byte{0xfe, 0xed, 0xfa, 0xce, 0, 0, 0, 18}
	tests := []struct {
		name string
		in   []byte
		want ident
	}{
		{"riscv64", elfOf(2, 1, 243), ident{elf: true, ELF: platform.ELF{Machine: elf.EM_RISCV, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}}},
		{"s390x", elfOf(2, 2, 22), ident{elf: true, ELF: platform.ELF{Machine: elf.EM_S390, Class: elf.ELFCLASS64, Data: elf.ELFDATA2MSB}}},
		{"armv7l", elfOf(1, 1, 40), ident{elf: true, ELF: platform.ELF{Machine: elf.EM_ARM, Class: elf.ELFCLASS32, Data: elf.ELFDATA2LSB}}},
		{"ELF with an invalid class", elfOf(3, 1, 183), ident{}},
		{"ELF with an invalid byte order", elfOf(2, 0, 183), ident{}},
		{"Mach-O x86_64", machOHeader(0x01000007), ident{foreign: "Mach-O x86_64"}},
		{"Mach-O of an unknown CPU", machOHeader(99), ident{foreign: "Mach-O cpu 0x63"}},
		{"big-endian Mach-O", bigEndianMachO, ident{foreign: "Mach-O ppc"}},
		{"universal Mach-O", []byte("\xca\xfe\xba\xbe\x00\x00\x00\x01"), ident{foreign: "Mach-O universal"}},
		{"Java class", []byte("\xca\xfe\xba\xbe\x00\x00\x00\x34"), ident{}},
		{"PE arm64", peHeader(0xaa64), ident{foreign: "PE arm64"}},
		{"PE of an unknown machine", peHeader(0x1234), ident{foreign: "PE machine 0x1234"}},
		{"DOS header without PE", append([]byte("MZ"), make([]byte, 0x60)...), ident{}},
		{"PE offset past the end", append(peHeader(0x8664)[:0x40], 0xff, 0xff, 0xff, 0xff), ident{}},
		{"text starting with MZ", []byte("MZ is a text file that is long enough to hold a DOS header offset, and then some"), ident{}},
		{"empty", nil, ident{}},
	}
	for _, tt := range tests {
		if got := identify(tt.in); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestIdentifyRealFiles: the headers of real binaries, as the toolchains
// installed for the tests write them.
func TestIdentifyRealFiles(t *testing.T) {
	tests := []struct {
		path string
		want platform.ELF
	}{
		{"../pairing/testdata/elf/hello-x86_64", platform.ELF{Machine: elf.EM_X86_64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}},
		{"../pairing/testdata/elf/hello-aarch64", platform.ELF{Machine: elf.EM_AARCH64, Class: elf.ELFCLASS64, Data: elf.ELFDATA2LSB}},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := identify(b); !got.elf || got.ELF != tt.want {
			t.Errorf("%s: %+v, want %v", tt.path, got, tt.want)
		}
	}
}

// FuzzIdentify checks identify against Go's own decoders: whatever
// debug/elf, debug/macho or debug/pe read as a file of their format,
// identify must name the same way.
func FuzzIdentify(f *testing.F) {
	f.Add(machOHeader(0x0100000c))
	f.Add(peHeader(0x8664))
	f.Add([]byte("\xca\xfe\xba\xbe\x00\x00\x00\x01"))
	for _, p := range []string{"../pairing/testdata/elf/hello-x86_64", "../pairing/testdata/elf/hello-aarch64"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id := identify(b)
		if id.elf && id.foreign != "" {
			t.Fatalf("both ELF and %s", id.foreign)
		}
		if ef, err := elf.NewFile(bytes.NewReader(b)); err == nil {
			want := platform.ELF{Machine: ef.Machine, Class: ef.Class, Data: ef.Data}
			if !id.elf || id.ELF != want {
				t.Fatalf("debug/elf reads %v, identify %+v", want, id)
			}
		}
		if _, err := macho.NewFile(bytes.NewReader(b)); err == nil && (id.elf || len(id.foreign) < 6 || id.foreign[:6] != "Mach-O") {
			t.Fatalf("debug/macho reads a Mach-O file, identify %+v", id)
		}
		if ff, err := macho.NewFatFile(bytes.NewReader(b)); err == nil && len(ff.Arches) < 20 && id.foreign != "Mach-O universal" {
			t.Fatalf("debug/macho reads a universal file, identify %+v", id)
		}
		// debug/pe also reads bare COFF objects, without the DOS header.
		if _, err := pe.NewFile(bytes.NewReader(b)); err == nil && len(b) >= 2 && string(b[:2]) == "MZ" && (len(id.foreign) < 3 || id.foreign[:3] != "PE ") {
			t.Fatalf("debug/pe reads a PE file, identify %+v", id)
		}
	})
}
