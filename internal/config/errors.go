package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a config: where it is and what is wrong. Parse,
// Load and Validate return every problem they find, each an *Error, joined
// with errors.Join; errors.As finds the first.
type Error struct {
	File string // the name given to Parse or Load; "" from Validate
	Line int    // 1-based line in File; 0 when unknown, as from Validate
	Path string // key path, e.g. "models[0].batching.timeout"; "" for the whole file
	Msg  string // what is wrong, and what would be right
}

// Error formats e as "file:line: path: msg", or "config: path: msg" when
// e has no file.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	default:
		b.WriteString("config: ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// join sorts errs by line, keeping the order of errors on one line, and
// joins them.
func join(errs []*Error) error {
	slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}

// child returns the key path of key under path.
func child(path, key string) string {
	if !isPlainKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// index returns the key path of element i of the list at path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// parent returns the key path that contains path, or "" at the top.
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

func isPlainKey(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// isAlnum reports whether r is an ASCII letter or digit.
func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// quote quotes s for a message, shortened if it is long.
func quote(s string) string {
	const limit = 48
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return strconv.Quote(s)
}

// suggest returns the allowed key closest to key, or "" if none is close.
func suggest(key string, allowed []string) string {
	// Allow one edit in a short key, two in a longer one, three in a long
	// one: "port" is not a typo of "zone".
	limit := 1
	switch {
	case len(key) > 12:
		limit = 3
	case len(key) > 4:
		limit = 2
	}
	best, bestDist := "", limit+1
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(key), a); d < bestDist {
			best, bestDist = a, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// errorf is a shorthand for building an *Error.
func errorf(file string, line int, path, format string, args ...any) *Error {
	return &Error{File: file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}
