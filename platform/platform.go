package platform

import (
	"debug/elf"
	"fmt"
	"strings"
)

// ELF is what an ELF header says about the platform a file is for.
type ELF struct {
	Machine elf.Machine
	Class   elf.Class // elf.ELFCLASS32 or elf.ELFCLASS64
	Data    elf.Data  // elf.ELFDATA2LSB or elf.ELFDATA2MSB
}

// String names e by the CPUs of the systems whose code it is ("aarch64",
// "armv6l/armv7l"), or spells it out when no system of the table has it
// ("EM_AARCH64 64-bit big-endian").
func (e ELF) String() string {
	var cpus []string
	for _, p := range table {
		if p.ELF == e {
			cpus = append(cpus, p.CPU())
		}
	}
	if len(cpus) > 0 {
		return strings.Join(cpus, "/")
	}
	class := fmt.Sprintf("class %d", e.Class)
	switch e.Class {
	case elf.ELFCLASS32:
		class = "32-bit"
	case elf.ELFCLASS64:
		class = "64-bit"
	}
	data := fmt.Sprintf("byte order %d", e.Data)
	switch e.Data {
	case elf.ELFDATA2LSB:
		data = "little-endian"
	case elf.ELFDATA2MSB:
		data = "big-endian"
	}
	// debug/elf names a value it does not know after the nearest one
	// below it ("EM_ALPHA_STD+30542").
	machine := e.Machine.String()
	if strings.Contains(machine, "+") {
		machine = fmt.Sprintf("machine %#x", uint16(e.Machine))
	}
	return fmt.Sprintf("%s %s %s", machine, class, data)
}

// Platform is one Nix system.
type Platform struct {
	System string // Nix system double, "aarch64-linux"
	ELF    ELF    // what its executables and libraries are
	// Config is the host config of nixpkgs' glibc package set for it,
	// which cross-built package names carry as a suffix.
	Config string
	// MuslConfig is the config of its musl package sets (pkgsMusl,
	// pkgsStatic, pkgsCross.*-musl).
	MuslConfig string
	// carries lists the systems whose code this one's toolchains and
	// packages carry too: an x86_64 gcc builds and ships i686 code.
	carries []string
}

// CPU is the first part of System: "aarch64", "armv7l".
func (p Platform) CPU() string {
	cpu, _, _ := strings.Cut(p.System, "-")
	return cpu
}

// Configs lists the host configs of p: glibc first, then musl.
func (p Platform) Configs() []string { return []string{p.Config, p.MuslConfig} }

// ELFs is the ELF code a build on p carries: its own, and that of the
// systems its toolchains also target (i686 for x86_64).
func (p Platform) ELFs() []ELF {
	out := []ELF{p.ELF}
	for _, s := range p.carries {
		if c, ok := lookup(s); ok && c.ELF != p.ELF {
			out = append(out, c.ELF)
		}
	}
	return out
}

var (
	lsb32 = func(m elf.Machine) ELF { return ELF{m, elf.ELFCLASS32, elf.ELFDATA2LSB} }
	lsb64 = func(m elf.Machine) ELF { return ELF{m, elf.ELFCLASS64, elf.ELFDATA2LSB} }
	msb64 = func(m elf.Machine) ELF { return ELF{m, elf.ELFCLASS64, elf.ELFDATA2MSB} }
)

// table is sorted by system.
var table = []Platform{
	{System: "aarch64-linux", ELF: lsb64(elf.EM_AARCH64), Config: "aarch64-unknown-linux-gnu", MuslConfig: "aarch64-unknown-linux-musl"},
	{System: "armv6l-linux", ELF: lsb32(elf.EM_ARM), Config: "armv6l-unknown-linux-gnueabihf", MuslConfig: "armv6l-unknown-linux-musleabihf"},
	{System: "armv7l-linux", ELF: lsb32(elf.EM_ARM), Config: "armv7l-unknown-linux-gnueabihf", MuslConfig: "armv7l-unknown-linux-musleabihf"},
	{System: "i686-linux", ELF: lsb32(elf.EM_386), Config: "i686-unknown-linux-gnu", MuslConfig: "i686-unknown-linux-musl"},
	{System: "loongarch64-linux", ELF: lsb64(elf.EM_LOONGARCH), Config: "loongarch64-unknown-linux-gnu", MuslConfig: "loongarch64-unknown-linux-musl"},
	// n64, the ABI of mips64el-linux (gnuabin32 would be 32-bit ELF).
	{System: "mips64el-linux", ELF: lsb64(elf.EM_MIPS), Config: "mips64el-unknown-linux-gnuabi64", MuslConfig: "mips64el-unknown-linux-muslabi64"},
	{System: "powerpc64le-linux", ELF: lsb64(elf.EM_PPC64), Config: "powerpc64le-unknown-linux-gnu", MuslConfig: "powerpc64le-unknown-linux-musl"},
	{System: "riscv64-linux", ELF: lsb64(elf.EM_RISCV), Config: "riscv64-unknown-linux-gnu", MuslConfig: "riscv64-unknown-linux-musl"},
	{System: "s390x-linux", ELF: msb64(elf.EM_S390), Config: "s390x-unknown-linux-gnu", MuslConfig: "s390x-unknown-linux-musl"},
	{System: "x86_64-linux", ELF: lsb64(elf.EM_X86_64), Config: "x86_64-unknown-linux-gnu", MuslConfig: "x86_64-unknown-linux-musl", carries: []string{"i686-linux"}},
}

func lookup(system string) (Platform, bool) {
	for _, p := range table {
		if p.System == system {
			return p, true
		}
	}
	return Platform{}, false
}

// Lookup returns the platform of a Nix system double. A system outside the
// table is an error that lists the known ones.
func Lookup(system string) (Platform, error) {
	if p, ok := lookup(system); ok {
		return p, nil
	}
	return Platform{}, fmt.Errorf("system %q is not one decross-store knows (known: %s)", system, strings.Join(Systems(), ", "))
}

// Systems lists the known system doubles, sorted.
func Systems() []string {
	out := make([]string, len(table))
	for i, p := range table {
		out[i] = p.System
	}
	return out
}

// ByConfig returns the platform that config (a host suffix, leading dash
// optional) is a glibc or musl config of.
func ByConfig(config string) (Platform, bool) {
	config = strings.TrimPrefix(config, "-")
	for _, p := range table {
		if config == p.Config || config == p.MuslConfig {
			return p, true
		}
	}
	return Platform{}, false
}

// ConfigIn finds which of p's configs name carries as a whole
// dash-separated run of segments: "hello-static-aarch64-unknown-linux-musl-2.12"
// carries aarch64-linux's musl config. pkgsStatic names packages so on
// whichever platform they are built, so there native and cross names are
// equal and both carry it.
func (p Platform) ConfigIn(name string) (string, bool) {
	for _, c := range p.Configs() {
		s := "-" + c
		for off := 0; ; {
			i := strings.Index(name[off:], s)
			if i < 0 {
				break
			}
			end := off + i + len(s)
			if end == len(name) || name[end] == '-' {
				return c, true
			}
			off += i + 1
		}
	}
	return "", false
}
