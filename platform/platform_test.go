package platform

import (
	"debug/elf"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		system      string
		machine     elf.Machine
		class       elf.Class
		data        elf.Data
		config, mus string
		name        string
	}{
		{"x86_64-linux", elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB, "x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl", "x86_64"},
		{"i686-linux", elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB, "i686-unknown-linux-gnu", "i686-unknown-linux-musl", "i686"},
		{"aarch64-linux", elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB, "aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl", "aarch64"},
		{"armv7l-linux", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB, "armv7l-unknown-linux-gnueabihf", "armv7l-unknown-linux-musleabihf", "armv6l/armv7l"},
		{"armv6l-linux", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB, "armv6l-unknown-linux-gnueabihf", "armv6l-unknown-linux-musleabihf", "armv6l/armv7l"},
		{"riscv64-linux", elf.EM_RISCV, elf.ELFCLASS64, elf.ELFDATA2LSB, "riscv64-unknown-linux-gnu", "riscv64-unknown-linux-musl", "riscv64"},
		{"powerpc64le-linux", elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB, "powerpc64le-unknown-linux-gnu", "powerpc64le-unknown-linux-musl", "powerpc64le"},
		{"s390x-linux", elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB, "s390x-unknown-linux-gnu", "s390x-unknown-linux-musl", "s390x"},
		{"loongarch64-linux", elf.EM_LOONGARCH, elf.ELFCLASS64, elf.ELFDATA2LSB, "loongarch64-unknown-linux-gnu", "loongarch64-unknown-linux-musl", "loongarch64"},
		{"mips64el-linux", elf.EM_MIPS, elf.ELFCLASS64, elf.ELFDATA2LSB, "mips64el-unknown-linux-gnuabi64", "mips64el-unknown-linux-muslabi64", "mips64el"},
	}
	if len(tests) != len(Systems()) {
		t.Errorf("table has %d systems, the test %d", len(Systems()), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.system, func(t *testing.T) {
			p, err := Lookup(tt.system)
			if err != nil {
				t.Fatal(err)
			}
			want := ELF{tt.machine, tt.class, tt.data}
			if p.ELF != want || p.Config != tt.config || p.MuslConfig != tt.mus {
				t.Errorf("Lookup = %+v, want %v, %s, %s", p, want, tt.config, tt.mus)
			}
			if got := p.ELF.String(); got != tt.name {
				t.Errorf("ELF name %q, want %q", got, tt.name)
			}
			for _, c := range []string{tt.config, "-" + tt.mus} {
				if q, ok := ByConfig(c); !ok || q.ELF != want {
					t.Errorf("ByConfig(%q) = %+v, %v", c, q, ok)
				}
			}
		})
	}
}

func TestLookupUnknown(t *testing.T) {
	for _, s := range []string{"", "sparc64-linux", "aarch64-darwin", "x86_64-windows"} {
		_, err := Lookup(s)
		if err == nil || !strings.Contains(err.Error(), `"`+s+`" is not one decross-store knows`) || !strings.Contains(err.Error(), "riscv64-linux") {
			t.Errorf("Lookup(%q) err = %v, want one naming it and listing the known systems", s, err)
		}
	}
	for _, c := range []string{"aarch64-apple-darwin", "x86_64-w64-mingw32", "aarch64-unknown-linux", "aarch64_be-unknown-linux-gnu"} {
		if p, ok := ByConfig(c); ok {
			t.Errorf("ByConfig(%q) = %s, want none", c, p.System)
		}
	}
}

func TestELFs(t *testing.T) {
	x, _ := Lookup("x86_64-linux")
	i, _ := Lookup("i686-linux")
	a, _ := Lookup("aarch64-linux")
	if got := x.ELFs(); !reflect.DeepEqual(got, []ELF{x.ELF, i.ELF}) {
		t.Errorf("x86_64 ELFs = %v, want x86_64 and i686", got)
	}
	if got := a.ELFs(); !reflect.DeepEqual(got, []ELF{a.ELF}) {
		t.Errorf("aarch64 ELFs = %v", got)
	}
}

func TestELFString(t *testing.T) {
	tests := []struct {
		e    ELF
		want string
	}{
		{ELF{elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2MSB}, "EM_AARCH64 64-bit big-endian"},
		{ELF{elf.EM_X86_64, elf.ELFCLASS32, elf.ELFDATA2LSB}, "EM_X86_64 32-bit little-endian"},
		{ELF{elf.EM_SPARCV9, elf.ELFCLASS64, elf.ELFDATA2MSB}, "EM_SPARCV9 64-bit big-endian"},
		{ELF{elf.Machine(0x7777), 9, 7}, "machine 0x7777 class 9 byte order 7"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestConfigIn(t *testing.T) {
	a, _ := Lookup("aarch64-linux")
	tests := []struct {
		name, want string
	}{
		{"hello-static-aarch64-unknown-linux-musl-2.12", "aarch64-unknown-linux-musl"},
		{"hello-aarch64-unknown-linux-gnu-2.12", "aarch64-unknown-linux-gnu"},
		{"foo-1.0-aarch64-unknown-linux-musl", "aarch64-unknown-linux-musl"},
		{"hello-2.12", ""},
		{"hello-aarch64-unknown-linux-gnux-2.12", ""},
		{"aarch64-unknown-linux-gnu-gcc-13.3.0", ""}, // a target prefix, not a host config
	}
	for _, tt := range tests {
		got, ok := a.ConfigIn(tt.name)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("ConfigIn(%q) = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

func TestSystemsSorted(t *testing.T) {
	if s := Systems(); !slices.IsSorted(s) {
		t.Errorf("Systems() = %v, not sorted", s)
	}
}
