package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// sizeUnits are the units ParseSize accepts, in the order its errors list
// them.
var sizeUnits = [...]struct {
	name string
	mult int64
}{
	{"B", 1},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
}

const sizeUnitList = "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"

// ParseSize parses a byte size: a non-negative decimal integer with an
// optional unit, B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
// (powers of 1024), and no space between, e.g. "268435456" or "256MiB".
func ParseSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("config: %w", err)
	}
	return n, nil
}

// parseSize is ParseSize with errors that do not repeat the package.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New(`empty size; want an integer with an optional unit, e.g. 256MiB`)
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("%s is negative; must be 0 or more", quote(s))
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%s is not a size; want an integer with an optional unit, e.g. 256MiB", quote(s))
	}
	mult := int64(0)
	if unit := s[i:]; unit == "" {
		mult = 1
	} else {
		for _, u := range sizeUnits {
			if u.name == unit {
				mult = u.mult
			}
		}
		if mult == 0 {
			return 0, fmt.Errorf("%s is not a size: unknown unit %s; use %s", quote(s), quote(unit), sizeUnitList)
		}
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s is too large; the most is %d bytes", quote(s), int64(math.MaxInt64))
	}
	return n * mult, nil
}
