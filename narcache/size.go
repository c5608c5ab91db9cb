package narcache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes given as text: plain digits, or digits and a
// unit K, M, G or T, optionally followed by "iB" or "B" ("50GiB",
// "500MiB", "1G", "10KB"). Every unit is a power of 1024. It is a
// flag.Value.
type Size int64

var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10,
	"M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
	"G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
	"T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40,
}

// ParseSize parses text as a Size.
func ParseSize(text string) (Size, error) {
	digits := strings.TrimSpace(text)
	i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' })
	unit := ""
	if i >= 0 {
		digits, unit = strings.TrimSpace(digits[:i]), strings.TrimSpace(digits[i:])
	}
	mult, ok := sizeUnits[strings.ToUpper(unit)]
	if digits == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, optionally with a unit K, M, G or T (such as 50GiB or 500MiB)", text)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", text)
	}
	return Size(n * mult), nil
}

// Set parses text (flag.Value).
func (s *Size) Set(text string) error {
	v, err := ParseSize(text)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String writes the size in the largest unit that divides it ("50GiB").
func (s Size) String() string {
	n := int64(s)
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
