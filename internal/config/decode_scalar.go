package config

// The decoder's readers of scalar values (strings, integers, booleans,
// durations, sizes) and of how a node is described in errors.

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// scalar reports whether n is a scalar with the given tag, and reports a
// type error for path if not.
func (d *decoder) scalar(n *yaml.Node, path, tag, want string) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == tag {
		return true
	}
	if tag == tagInt && isIntLiteral(n) {
		d.fail(n.Line, path, "%s is out of range", n.Value)
		return false
	}
	hint := ""
	if tag == tagStr && n.Kind == yaml.ScalarNode {
		hint = "; quote it to make it a string"
	}
	d.fail(n.Line, path, "expected %s, got %s%s", want, describe(n), hint)
	return false
}

// str decodes a string, or reports an error and returns def.
func (d *decoder) str(n *yaml.Node, path, def string) string {
	if !d.scalar(n, path, tagStr, "a string") {
		return def
	}
	return n.Value
}

// int decodes an integer, or reports an error and returns def.
func (d *decoder) int(n *yaml.Node, path string, def int) int {
	if !d.scalar(n, path, tagInt, "an integer") {
		return def
	}
	var v int
	if err := n.Decode(&v); err != nil {
		d.fail(n.Line, path, "%s is out of range", n.Value)
		return def
	}
	return v
}

// bool decodes a boolean, or reports an error and returns def.
func (d *decoder) bool(n *yaml.Node, path string, def bool) bool {
	if !d.scalar(n, path, tagBool, "a boolean (true or false)") {
		return def
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		d.fail(n.Line, path, "%s is not a boolean (true or false)", quote(n.Value))
		return def
	}
	return v
}

// duration decodes a Go duration such as "2ms", or reports an error and
// returns def. A bare 0 is a duration too.
func (d *decoder) duration(n *yaml.Node, path string, def time.Duration) time.Duration {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case tagStr:
			v, err := time.ParseDuration(n.Value)
			if err == nil {
				return v
			}
			if _, numErr := strconv.ParseFloat(n.Value, 64); numErr == nil {
				d.fail(n.Line, path, "%s has no unit; write e.g. %sms or %ss", quote(n.Value), n.Value, n.Value)
			} else {
				d.fail(n.Line, path, "%s is not a Go duration; write e.g. 2ms, 1.5s or 10m", quote(n.Value))
			}
			return def
		case tagInt, tagFloat:
			if v, err := time.ParseDuration(n.Value); err == nil && v == 0 {
				return 0
			}
			d.fail(n.Line, path, "%s has no unit; write e.g. %sms or %ss", n.Value, n.Value, n.Value)
			return def
		}
	}
	d.fail(n.Line, path, "expected a duration such as 2ms or 1s, got %s", describe(n))
	return def
}

// size decodes a byte size, an integer or a string such as "256MiB", or
// reports an error and returns def.
func (d *decoder) size(n *yaml.Node, path string, def int64) int64 {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case tagInt:
			var v int64
			if err := n.Decode(&v); err != nil {
				d.fail(n.Line, path, "%s is out of range", n.Value)
				return def
			}
			return v
		case tagStr:
			v, err := parseSize(n.Value)
			if err != nil {
				d.fail(n.Line, path, "%v", err)
				return def
			}
			return v
		case tagFloat:
			if isIntLiteral(n) {
				d.fail(n.Line, path, "%s is out of range", n.Value)
				return def
			}
		}
	}
	d.fail(n.Line, path, "expected a size such as 268435456 or 256MiB, got %s", describe(n))
	return def
}

// isIntLiteral reports whether n is a plain decimal integer that YAML
// resolved to a float because it is too large for an int64.
func isIntLiteral(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagFloat {
		return false
	}
	s := strings.TrimPrefix(n.Value, "-")
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// describe names the type of n, and its value if it is a scalar, for an
// error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
	default:
		return "a YAML node of kind " + strconv.Itoa(int(n.Kind))
	}
	switch tag := n.ShortTag(); tag {
	case tagStr:
		return "string " + quote(n.Value)
	case tagInt:
		return "integer " + n.Value
	case tagFloat:
		return "number " + n.Value
	case tagBool:
		return "boolean " + n.Value
	case tagNull:
		return "null"
	default:
		return tag + " " + quote(n.Value)
	}
}
