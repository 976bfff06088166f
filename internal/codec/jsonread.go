package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// reader is a small JSON reader for the v2 request and response headers.
// It replaces encoding/json on the hot path: no reflection, and a tensor's
// data is kept as a sub-slice of the body (parsed once, by parseData) rather
// than copied and scanned twice.
type reader struct {
	in  []byte
	pos int
}

// maxSkipDepth bounds the nesting of a skipped or captured value, as
// encoding/json does.
const maxSkipDepth = 10000

func (r *reader) syntax(format string, args ...any) error {
	return invalid("malformed JSON at byte %d: %s", r.pos+1, fmt.Sprintf(format, args...))
}

func (r *reader) ws() {
	for r.pos < len(r.in) {
		switch r.in[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (r *reader) peek() byte {
	r.ws()
	if r.pos >= len(r.in) {
		return 0
	}
	return r.in[r.pos]
}

func (r *reader) eof() error {
	if r.pos >= len(r.in) {
		return invalid("malformed JSON: unexpected end of input")
	}
	return nil
}

// valueStart reports whether c can start a JSON value.
func valueStart(c byte) bool {
	return c == '{' || c == '[' || c == '"' || c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n'
}

// kind names the JSON type of the value starting with c, for messages.
func kind(c byte) string {
	switch {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	}
	return "number"
}

func typeError(field, want string, c byte) error {
	return invalid("malformed request: field %q must be %s, got JSON %s", field, want, kind(c))
}

// null consumes a null literal if one is next.
func (r *reader) null() (bool, error) {
	if r.peek() != 'n' {
		return false, nil
	}
	if len(r.in)-r.pos < 4 || string(r.in[r.pos:r.pos+4]) != "null" {
		return false, r.syntax("invalid literal")
	}
	r.pos += 4
	return true, nil
}

// object calls member for each key of an object; member must consume the
// value. A null object calls nothing.
func (r *reader) object(field string, member func(key []byte) error) error {
	if isNull, err := r.null(); isNull || err != nil {
		return err
	}
	if err := r.eof(); err != nil {
		return err
	}
	if c := r.in[r.pos]; c != '{' {
		if !valueStart(c) {
			return r.syntax("invalid character %q looking for the beginning of a value", c)
		}
		if field == "" {
			return invalid("malformed request: the body must be an object, got JSON %s", kind(c))
		}
		return typeError(field, "an object", c)
	}
	r.pos++
	if r.peek() == '}' {
		r.pos++
		return nil
	}
	for {
		if r.peek() != '"' {
			if err := r.eof(); err != nil {
				return err
			}
			return r.syntax("expected a string for an object key")
		}
		key, err := r.rawString()
		if err != nil {
			return err
		}
		if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) {
			k, err := unquote(nil, key)
			if err != nil {
				return err
			}
			key = []byte(k)
		}
		if r.peek() != ':' {
			if err := r.eof(); err != nil {
				return err
			}
			return r.syntax("expected ':' after object key")
		}
		r.pos++
		r.ws()
		if err := r.eof(); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			return nil
		case 0:
			return r.eof()
		default:
			return r.syntax("expected ',' or '}' after object value")
		}
	}
}

// array calls elem for each element; elem must consume it. A null array
// calls nothing and reports null.
func (r *reader) array(field string, elem func(i int) error) (isNull bool, err error) {
	if isNull, err := r.null(); isNull || err != nil {
		return isNull, err
	}
	if err := r.eof(); err != nil {
		return false, err
	}
	if c := r.in[r.pos]; c != '[' {
		return false, typeError(field, "an array", c)
	}
	r.pos++
	if r.peek() == ']' {
		r.pos++
		return false, nil
	}
	for i := 0; ; i++ {
		r.ws()
		if err := r.eof(); err != nil {
			return false, err
		}
		if err := elem(i); err != nil {
			return false, err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			return false, nil
		case 0:
			return false, r.eof()
		default:
			return false, r.syntax("expected ',' or ']' after array element")
		}
	}
}

// rawString consumes a string and returns its bytes between the quotes,
// still escaped.
func (r *reader) rawString() ([]byte, error) {
	start := r.pos
	r.pos++
	for r.pos < len(r.in) {
		switch c := r.in[r.pos]; {
		case c == '"':
			r.pos++
			return r.in[start+1 : r.pos-1], nil
		case c == '\\':
			r.pos += 2
		case c < 0x20:
			return nil, r.syntax("control character in string")
		default:
			r.pos++
		}
	}
	return nil, invalid("malformed JSON: unterminated string")
}

// str consumes a string value (or null, giving "") and unescapes it.
func (r *reader) str(field string) (string, bool, error) {
	if isNull, err := r.null(); isNull || err != nil {
		return "", false, err
	}
	if c := r.in[r.pos]; c != '"' {
		return "", false, typeError(field, "a string", c)
	}
	start := r.pos
	raw, err := r.rawString()
	if err != nil {
		return "", false, err
	}
	s, err := unquote(r.in[start:r.pos], raw)
	return s, true, err
}

// unquote returns the text of a JSON string literal lit (with quotes) whose
// inside is raw. Invalid UTF-8 becomes U+FFFD, as with encoding/json.
func unquote(lit, raw []byte) (string, error) {
	if lit == nil {
		lit = append(append(append(make([]byte, 0, len(raw)+2), '"'), raw...), '"')
	}
	simple := utf8.Valid(raw)
	for _, c := range raw {
		if c == '\\' {
			simple = false
			break
		}
	}
	if simple {
		return string(raw), nil
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", invalid("malformed JSON: bad string %s: %v", lit, err)
	}
	return s, nil
}

// token consumes a bare literal (number, true, false, null).
func (r *reader) token() []byte {
	start := r.pos
	for r.pos < len(r.in) && tokenByte[r.in[r.pos]] {
		r.pos++
	}
	return r.in[start:r.pos]
}

// skip consumes any value and returns its bytes.
func (r *reader) skip() ([]byte, error) {
	r.ws()
	start := r.pos
	depth := 0
	for {
		if err := r.eof(); err != nil {
			return nil, err
		}
		switch c := r.in[r.pos]; c {
		case '{', '[':
			depth++
			if depth > maxSkipDepth {
				return nil, r.syntax("nested too deeply")
			}
			r.pos++
		case '}', ']':
			if depth == 0 {
				return nil, r.syntax("unexpected %q", c)
			}
			depth--
			r.pos++
		case '"':
			if _, err := r.rawString(); err != nil {
				return nil, err
			}
		case ',', ':':
			if depth == 0 {
				return nil, r.syntax("unexpected %q", c)
			}
			r.pos++
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			tok := r.token()
			if len(tok) == 0 {
				return nil, r.syntax("invalid character %q", c)
			}
			if !validLiteral(tok) {
				r.pos -= len(tok)
				return nil, r.syntax("invalid literal %q", tok)
			}
		}
		if depth == 0 {
			return r.in[start:r.pos], nil
		}
	}
}

func validLiteral(tok []byte) bool {
	switch string(tok) {
	case "true", "false", "null":
		return true
	}
	return validNumber(tok)
}

// int64s consumes an array of integers (or null).
func (r *reader) int64s(field string) ([]int64, error) {
	out := []int64{}
	if c := r.peek(); c != '[' && c != 'n' && c != 0 {
		return nil, typeError(field, "an integer array", c)
	}
	isNull, err := r.array(field, func(int) error {
		c := r.in[r.pos]
		tok := r.token()
		if len(tok) == 0 || !validNumber(tok) {
			if c == '"' || c == '{' || c == '[' {
				return typeError(field, "an integer array", c)
			}
			return r.syntax("invalid value in %q", field)
		}
		v, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			return invalid("malformed request: field %q must be an integer array, got JSON number %s", field, tok)
		}
		out = append(out, v)
		return nil
	})
	if isNull {
		return nil, err
	}
	return out, err
}

// parameters consumes a parameters object into string, bool, json.Number,
// nil (null) or a placeholder for arrays and objects, which params refuses.
func (r *reader) parameters(field string) (map[string]any, error) {
	var m map[string]any
	err := r.object(field, func(key []byte) error {
		if m == nil {
			m = map[string]any{}
		}
		k := string(key) // object has unescaped it
		switch c := r.in[r.pos]; {
		case c == '"':
			s, _, err := r.str(field)
			m[k] = s
			return err
		case c == '{' || c == '[':
			_, err := r.skip()
			m[k] = []any{}
			return err
		default:
			tok := r.token()
			switch string(tok) {
			case "true":
				m[k] = true
			case "false":
				m[k] = false
			case "null":
				m[k] = nil
			default:
				if !validNumber(tok) {
					return r.syntax("invalid parameter value")
				}
				m[k] = json.Number(tok)
			}
			return nil
		}
	})
	return m, err
}

// tensorObj consumes one tensor object of "inputs" or "outputs".
func (r *reader) tensorObj(field string, t *wireTensor) error {
	return r.object(field, func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			t.Name, _, err = r.str(field + ".name")
		case "datatype":
			t.Datatype, _, err = r.str(field + ".datatype")
		case "shape":
			t.Shape, err = r.int64s(field + ".shape")
		case "parameters":
			t.Parameters, err = r.parameters(field + ".parameters")
		case "data":
			// With the name, datatype and shape known (the usual key order),
			// parse the elements in place: one pass over the text.
			if dt, ok := inference.ParseDataType(t.Datatype); ok && t.Name != "" && t.Shape != nil && r.in[r.pos] == '[' {
				if n, serr := inference.ShapeElements(t.Name, t.Shape); serr == nil {
					t.parsed, r.pos, err = parseDataAt(t.Name, dt, r.in, r.pos, n)
					t.hasParsed = err == nil
					return err
				}
			}
			var raw []byte
			if raw, err = r.skip(); err == nil && string(raw) != "null" {
				t.Data = raw
			}
		default:
			_, err = r.skip()
		}
		return err
	})
}

func (r *reader) tensors(field string) ([]wireTensor, error) {
	var out []wireTensor
	_, err := r.array(field, func(i int) error {
		out = append(out, wireTensor{})
		return r.tensorObj(field, &out[i])
	})
	return out, err
}

// end checks that only white space follows the top-level value.
func (r *reader) end() error {
	if r.peek() != 0 {
		return invalid("malformed JSON: data after the top-level object at byte %d", r.pos)
	}
	return nil
}

func readRequest(header []byte, w *wireRequest) error {
	r := &reader{in: header}
	if r.peek() == 0 {
		return invalid("malformed JSON: the body is empty; want a v2 inference request object")
	}
	err := r.object("", func(key []byte) error {
		var err error
		switch string(key) {
		case "id":
			var id string
			var present bool
			if id, present, err = r.str("id"); present {
				w.ID = &id
			}
		case "parameters":
			w.Parameters, err = r.parameters("parameters")
		case "inputs":
			w.Inputs, err = r.tensors("inputs")
		case "outputs":
			var isNull bool
			outs := []wireOutput{}
			isNull, err = r.array("outputs", func(i int) error {
				outs = append(outs, wireOutput{})
				o := &outs[i]
				return r.object("outputs", func(key []byte) error {
					var err error
					switch string(key) {
					case "name":
						o.Name, _, err = r.str("outputs.name")
					case "parameters":
						o.Parameters, err = r.parameters("outputs.parameters")
					default:
						_, err = r.skip()
					}
					return err
				})
			})
			if !isNull {
				w.Outputs = outs
			}
		default:
			_, err = r.skip()
		}
		return err
	})
	if err != nil {
		return err
	}
	return r.end()
}

func readResponse(header []byte, w *wireResponse) error {
	r := &reader{in: header}
	if r.peek() == 0 {
		return invalid("malformed JSON: the body is empty; want a v2 inference response object")
	}
	err := r.object("", func(key []byte) error {
		var err error
		switch string(key) {
		case "model_name":
			w.ModelName, _, err = r.str("model_name")
		case "model_version":
			w.ModelVersion, _, err = r.str("model_version")
		case "id":
			w.ID, _, err = r.str("id")
		case "parameters":
			w.Parameters, err = r.parameters("parameters")
		case "outputs":
			w.Outputs, err = r.tensors("outputs")
		default:
			_, err = r.skip()
		}
		return err
	})
	if err != nil {
		return err
	}
	return r.end()
}
