package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Keys allowed at each level of the file, in the order errors list them.
var (
	configKeys   = []string{"cache_bytes", "weights", "outlier_detection", "models"}
	modelKeys    = []string{"name", "protocol", "batching", "cache", "circuit_breakers", "hedging", "versions"}
	batchingKeys = []string{"max_batch_size", "max_queue_delay", "max_queue_size", "batch_policy", "timeout"}
	cacheKeys    = []string{"enabled", "ttl", "granularity", "scope"}
	versionKeys  = []string{"version", "weight", "endpoints", "service_addresses"}
	endpointKeys = []string{"address", "weight", "slots", "zone", "protocol"}
)

// aliasNodes is how many YAML nodes aliases may add to a file's walk, so
// that a few lines of anchors cannot make Parse build a huge Config. A file
// without aliases has fewer nodes than twice its bytes, and never reaches
// the bound.
const aliasNodes = 1 << 16

// YAML tags of scalars.
const (
	tagStr   = "!!str"
	tagInt   = "!!int"
	tagFloat = "!!float"
	tagBool  = "!!bool"
	tagNull  = "!!null"
	tagMerge = "!!merge"
)

// A decoder walks the YAML nodes of one file into a Config. It records
// where each key was, so that the checker can report lines, and which key
// paths failed to decode, so that the checker says nothing more about them.
type decoder struct {
	file   string
	errs   []*Error
	lines  map[string]int // key path → line of its key, or of its list element
	failed []string       // key paths whose values could not be decoded
	nodes  int            // nodes visited
	limit  int            // the most nodes to visit
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, lines: make(map[string]int)}
}

func (d *decoder) errorf(line int, path, format string, args ...any) {
	d.errs = append(d.errs, errorf(d.file, line, path, format, args...))
}

// fail reports that the value at path could not be decoded.
func (d *decoder) fail(line int, path, format string, args ...any) {
	d.errorf(line, path, format, args...)
	d.failed = append(d.failed, path)
}

// decode parses data into a Config with defaults applied. It returns nil
// when the file is no YAML mapping at all; otherwise the Config holds what
// could be decoded, and d.errs the problems.
func (d *decoder) decode(data []byte) *Config {
	root, err := parseYAML(data)
	if err != nil {
		err.File = d.file
		d.errs = append(d.errs, err)
		return nil
	}
	if root == nil {
		d.errorf(1, "", "the file is empty; it needs at least a models list")
		return nil
	}
	d.lines[""] = root.Line
	d.limit = 2*len(data) + aliasNodes
	c := &Config{CacheBytes: DefaultCacheBytes, Weights: DefaultWeights, OutlierDetection: DefaultOutlierDetection()}
	ok := d.mapping(root, "", configKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "cache_bytes":
			c.CacheBytes = d.size(v, path, c.CacheBytes)
		case "weights":
			c.Weights = d.str(v, path, c.Weights)
		case "outlier_detection":
			d.outlier(v, path, &c.OutlierDetection)
		case "models":
			for i, n := range d.list(v, path, "models") {
				c.Models = append(c.Models, d.model(n, index(path, i)))
			}
		}
	})
	if d.nodes > d.limit {
		d.errs = []*Error{errorf(d.file, 0, "", "aliases expand the file to more than %d YAML nodes", d.limit)}
		return nil
	}
	if !ok {
		return nil
	}
	return c
}

// syntaxLine matches the line in the errors of the YAML parser.
var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseYAML parses the single YAML document in data and returns its root
// node, or nil for an empty file. Its errors have no File.
func parseYAML(data []byte) (root *yaml.Node, err *Error) {
	defer func() {
		// The YAML parser panics on a few malformed inputs; a config
		// file is not worth a crash.
		if r := recover(); r != nil {
			root, err = nil, &Error{Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(err, data)
	}
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, syntaxError(err, data)
		}
		if n := docRoot(&more); n != nil && !isNull(n) {
			return nil, &Error{Line: more.Line, Msg: "a second YAML document; the file must hold one"}
		}
	}
	if root = docRoot(&doc); root != nil && isNull(root) {
		root = nil // only comments, or a lone null
	}
	return root, nil
}

func docRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	return nil
}

// syntaxError turns an error of the YAML parser into an *Error with the
// line of the problem. The parser's own line numbers are 0-based for
// parser errors and absent for problems on the first line; reading errors
// and unknown anchors carry none, so their line is found in data.
func syntaxError(err error, data []byte) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = err.Error()[len(m[0]):]
	}
	switch {
	case strings.HasPrefix(msg, "unknown anchor '"):
		name := strings.TrimSuffix(strings.TrimPrefix(msg, "unknown anchor '"), "' referenced")
		if i := bytes.Index(data, []byte("*"+name)); i >= 0 {
			line = lineAt(data, i)
		}
	case slices.Contains(readerProblems, msg):
		line = lineAt(data, badChar(data))
	case slices.Contains(parserProblems, msg):
		line++
	case line == 0:
		line = 1
	}
	return &Error{Line: line, Msg: "invalid YAML: " + msg}
}

// parserProblems are the messages of errors that the YAML parser, not its
// scanner, reports.
var parserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// readerProblems are the messages of errors about characters that YAML
// does not allow.
var readerProblems = []string{
	"control characters are not allowed",
	"invalid leading UTF-8 octet",
	"incomplete UTF-8 octet sequence",
	"invalid trailing UTF-8 octet",
	"invalid length of a UTF-8 sequence",
	"invalid Unicode character",
}

// badChar returns the offset of the first character in data that YAML does
// not allow, or -1.
func badChar(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1,
			r < 0x20 && r != '\t' && r != '\n' && r != '\r',
			r >= 0x7f && r <= 0x9f && r != 0x85,
			r == 0xfffe || r == 0xffff:
			return i
		}
		i += size
	}
	return -1
}

// lineAt returns the 1-based line of offset i in data, or 0 if i < 0.
func lineAt(data []byte, i int) int {
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

// deref follows aliases and counts the node against d.limit.
func (d *decoder) deref(n *yaml.Node) *yaml.Node {
	d.nodes++
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == tagNull
}

// entry is one key of a mapping and its value, both dereferenced.
type entry struct {
	key   string
	line  int
	value *yaml.Node
}

// entries returns the keys of mapping n in order, with merge keys (<<)
// expanded: a key written in n wins over a merged one, and an earlier
// merged mapping over a later one. inMerge holds the mappings being merged,
// to stop cycles.
func (d *decoder) entries(n *yaml.Node, path string, inMerge []*yaml.Node) []entry {
	var own, merged []entry
	first := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.deref(n.Content[i]), d.deref(n.Content[i+1])
		if k == nil || v == nil {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "a key must be a string; got %s", describe(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == tagMerge {
			merged = append(merged, d.merge(v, path, append(inMerge, n))...)
			continue
		}
		if line, dup := first[k.Value]; dup {
			d.errorf(k.Line, child(path, k.Value), "duplicate key; first set at line %d", line)
			continue
		}
		first[k.Value] = k.Line
		own = append(own, entry{key: k.Value, line: k.Line, value: v})
	}
	for _, e := range merged {
		if _, dup := first[e.key]; !dup {
			first[e.key] = e.line
			own = append(own, e)
		}
	}
	return own
}

// merge returns the entries that the value v of a merge key brings: one
// mapping, or a list of mappings.
func (d *decoder) merge(v *yaml.Node, path string, inMerge []*yaml.Node) []entry {
	from := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		from = from[:0]
		for _, n := range v.Content {
			from = append(from, d.deref(n))
		}
	}
	var out []entry
	for _, m := range from {
		switch {
		case m == nil:
		case m.Kind != yaml.MappingNode:
			d.fail(m.Line, path, "a merge key (<<) needs a mapping or a list of mappings; got %s", describe(m))
		case slices.Contains(inMerge, m):
			d.fail(m.Line, path, "a merge key (<<) merges a mapping into itself")
		default:
			out = append(out, d.entries(m, path, inMerge)...)
		}
	}
	return out
}

// mapping walks the mapping n at path. It reports keys not in allowed, and
// calls set for each allowed key whose value is not null; a null value
// ("key:" or "key: ~") counts as absent. It returns false if n is no
// mapping.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string, set func(key string, v *yaml.Node, path string)) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a mapping, got %s", describe(n))
		return false
	}
	for _, e := range d.entries(n, path, nil) {
		at := child(path, e.key)
		if !slices.Contains(allowed, e.key) {
			msg := "unknown key; "
			if s := suggest(e.key, allowed); s != "" {
				msg += "did you mean " + s + "? "
			}
			d.errorf(e.line, at, "%sallowed keys: %s", msg, strings.Join(allowed, ", "))
			continue
		}
		d.lines[at] = e.line
		if !isNull(e.value) && d.nodes <= d.limit {
			set(e.key, e.value, at)
		}
	}
	return true
}

// list returns the elements of the list n at path, dereferenced.
func (d *decoder) list(n *yaml.Node, path, what string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, path, "expected a list of %s, got %s", what, describe(n))
		return nil
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for i, e := range n.Content {
		if e = d.deref(e); e == nil || d.nodes > d.limit {
			break
		}
		d.lines[index(path, i)] = e.Line
		out = append(out, e)
	}
	return out
}

func (d *decoder) model(n *yaml.Node, path string) Model {
	m := Model{Protocol: DefaultProtocol, Batching: DefaultBatching(), Cache: DefaultCache(),
		CircuitBreakers: DefaultCircuitBreakers(), Hedging: DefaultHedging()}
	d.mapping(n, path, modelKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "name":
			m.Name = d.str(v, path, m.Name)
		case "protocol":
			m.Protocol = d.str(v, path, m.Protocol)
		case "batching":
			d.batching(v, path, &m.Batching)
		case "cache":
			d.cache(v, path, &m.Cache)
		case "circuit_breakers":
			d.breakers(v, path, &m.CircuitBreakers)
		case "hedging":
			d.hedging(v, path, &m.Hedging)
		case "versions":
			for i, n := range d.list(v, path, "versions") {
				m.Versions = append(m.Versions, d.version(n, index(path, i)))
			}
		}
	})
	return m
}

func (d *decoder) batching(n *yaml.Node, path string, b *Batching) {
	d.mapping(n, path, batchingKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "max_batch_size":
			b.MaxBatchSize = d.int(v, path, b.MaxBatchSize)
		case "max_queue_size":
			b.MaxQueueSize = d.int(v, path, b.MaxQueueSize)
		case "max_queue_delay":
			b.MaxQueueDelay = d.duration(v, path, b.MaxQueueDelay)
		case "batch_policy":
			b.Policy = d.str(v, path, b.Policy)
		case "timeout":
			b.Timeout = d.duration(v, path, b.Timeout)
		}
	})
}

func (d *decoder) cache(n *yaml.Node, path string, c *Cache) {
	d.mapping(n, path, cacheKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "enabled":
			c.Enabled = d.bool(v, path, c.Enabled)
		case "ttl":
			c.TTL = d.duration(v, path, c.TTL)
		case "granularity":
			c.Granularity = d.str(v, path, c.Granularity)
		case "scope":
			c.Scope = d.str(v, path, c.Scope)
		}
	})
}

func (d *decoder) version(n *yaml.Node, path string) Version {
	ver := Version{Weight: DefaultWeight}
	d.mapping(n, path, versionKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "version":
			// A version is a string, but "version: 1" is too natural to
			// refuse: numbers are taken as written.
			if v.Kind == yaml.ScalarNode && (v.ShortTag() == tagInt || v.ShortTag() == tagFloat) {
				ver.Version = v.Value
			} else {
				ver.Version = d.str(v, path, ver.Version)
			}
		case "weight":
			ver.Weight = d.int(v, path, ver.Weight)
		case "endpoints":
			for i, n := range d.list(v, path, "endpoints") {
				ver.Endpoints = append(ver.Endpoints, d.endpoint(n, index(path, i)))
			}
		case "service_addresses":
			for i, n := range d.list(v, path, "service_addresses") {
				ver.ServiceAddresses = append(ver.ServiceAddresses, d.str(n, index(path, i), ""))
			}
		}
	})
	return ver
}

func (d *decoder) endpoint(n *yaml.Node, path string) Endpoint {
	ep := Endpoint{Weight: DefaultWeight, Slots: DefaultSlots}
	d.mapping(n, path, endpointKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "address":
			ep.Address = d.str(v, path, ep.Address)
		case "weight":
			ep.Weight = d.int(v, path, ep.Weight)
		case "slots":
			ep.Slots = d.int(v, path, ep.Slots)
		case "zone":
			ep.Zone = d.str(v, path, ep.Zone)
		case "protocol":
			ep.Protocol = d.str(v, path, ep.Protocol)
		}
	})
	return ep
}
