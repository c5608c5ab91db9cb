package classify

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/decross-store/decross-store/platform"
)

// ident is what the first bytes of a file say it is.
type ident struct {
	elf bool
	platform.ELF
	// foreign names an executable format other than ELF, with its
	// architecture: "Mach-O arm64", "PE x86-64". "" for ELF and data.
	foreign string
}

// identify reads the header at the start of a file: ELF (machine, class,
// byte order), Mach-O (thin or universal) or PE. Anything else, including
// a header with an invalid ELF class or byte order, is data.
func identify(b []byte) ident {
	if id, ok := identifyELF(b); ok {
		return id
	}
	if f := machOFormat(b); f != "" {
		return ident{foreign: f}
	}
	if f := peFormat(b); f != "" {
		return ident{foreign: f}
	}
	return ident{}
}

func identifyELF(b []byte) (ident, bool) {
	if len(b) < 20 || string(b[:4]) != elf.ELFMAG {
		return ident{}, false
	}
	class := elf.Class(b[elf.EI_CLASS])
	if class != elf.ELFCLASS32 && class != elf.ELFCLASS64 {
		return ident{}, false
	}
	var order binary.ByteOrder
	switch data := elf.Data(b[elf.EI_DATA]); data {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return ident{}, false
	}
	return ident{elf: true, ELF: platform.ELF{
		Machine: elf.Machine(order.Uint16(b[18:20])),
		Class:   class,
		Data:    elf.Data(b[elf.EI_DATA]),
	}}, true
}

// Mach-O CPU types (mach/machine.h).
var machOCPUs = map[uint32]string{
	7:          "i386",
	0x01000007: "x86_64",
	12:         "arm",
	0x0100000c: "arm64",
	0x0200000c: "arm64_32",
	18:         "ppc",
	0x01000012: "ppc64",
}

func machOCPU(cpu uint32) string {
	if n, ok := machOCPUs[cpu]; ok {
		return n
	}
	return fmt.Sprintf("cpu %#x", cpu)
}

// machOFormat names a Mach-O header: thin files in either byte order, and
// universal ("fat") files. A universal file starts like a Java class file
// (0xcafebabe); what follows is an architecture count there and a version
// (45 and up) in a class file, so, as file(1) does, only small counts are
// taken for Mach-O.
func machOFormat(b []byte) string {
	if len(b) < 8 {
		return ""
	}
	switch be, le := binary.BigEndian.Uint32(b), binary.LittleEndian.Uint32(b); {
	case le == 0xfeedface || le == 0xfeedfacf:
		return "Mach-O " + machOCPU(binary.LittleEndian.Uint32(b[4:]))
	case be == 0xfeedface || be == 0xfeedfacf:
		return "Mach-O " + machOCPU(binary.BigEndian.Uint32(b[4:]))
	case be == 0xcafebabe || be == 0xcafebabf:
		if n := binary.BigEndian.Uint32(b[4:]); n >= 1 && n < 20 {
			return "Mach-O universal"
		}
	}
	return ""
}

// PE machine types (the PE format's IMAGE_FILE_MACHINE_*).
var peMachines = map[uint16]string{
	0x14c:  "i386",
	0x8664: "x86-64",
	0x1c0:  "arm",
	0x1c4:  "armnt",
	0xaa64: "arm64",
	0x200:  "ia64",
	0x5032: "riscv32",
	0x5064: "riscv64",
	0x6264: "loongarch64",
	0xebc:  "EFI byte code",
}

// peFormat names a PE header: "MZ", and at the offset the DOS header gives,
// "PE\0\0" and the machine. A DOS header alone (an MZ text file) is not
// enough.
func peFormat(b []byte) string {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return ""
	}
	off := uint64(binary.LittleEndian.Uint32(b[0x3c:]))
	if off+6 > uint64(len(b)) || string(b[off:off+4]) != "PE\x00\x00" {
		return ""
	}
	m := binary.LittleEndian.Uint16(b[off+4:])
	if n, ok := peMachines[m]; ok {
		return "PE " + n
	}
	return fmt.Sprintf("PE machine %#x", m)
}
