package codec

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// diff describes how got differs from want, path by path, or returns "" when
// they are equal. Nil and empty slices and maps are alike: a JSON "[]" and a
// zero-byte binary tensor carry the same (no) data. Dynamic types must match,
// so a parameter that was float64 1 and came back int64 1 is a difference.
func diff(want, got any) string {
	var d []string
	diffValue(&d, "", reflect.ValueOf(want), reflect.ValueOf(got))
	return strings.Join(d, "\n")
}

func diffValue(d *[]string, path string, w, g reflect.Value) {
	if len(*d) >= 10 {
		return
	}
	add := func(format string, args ...any) {
		*d = append(*d, fmt.Sprintf("%s: ", cmp.Or(path, "value"))+fmt.Sprintf(format, args...))
	}
	if !w.IsValid() || !g.IsValid() {
		if w.IsValid() != g.IsValid() {
			add("got %v, want %v", g, w)
		}
		return
	}
	if w.Type() != g.Type() {
		add("got %v (%v), want %v (%v)", g, g.Type(), w, w.Type())
		return
	}
	switch w.Kind() {
	case reflect.Slice:
		if w.Type().Elem().Kind() == reflect.Uint8 {
			if !bytes.Equal(w.Bytes(), g.Bytes()) {
				add("got %x, want %x", g.Bytes(), w.Bytes())
			}
			return
		}
		if w.Len() != g.Len() {
			add("got %d elements %v, want %d %v", g.Len(), g, w.Len(), w)
			return
		}
		for i := range w.Len() {
			diffValue(d, fmt.Sprintf("%s[%d]", path, i), w.Index(i), g.Index(i))
		}
	case reflect.Map:
		keys := map[string]reflect.Value{}
		for _, k := range append(w.MapKeys(), g.MapKeys()...) {
			keys[fmt.Sprint(k)] = k
		}
		for _, name := range slices.Sorted(maps.Keys(keys)) {
			k := keys[name]
			diffValue(d, fmt.Sprintf("%s[%q]", path, name), w.MapIndex(k), g.MapIndex(k))
		}
	case reflect.Struct:
		for i := range w.NumField() {
			diffValue(d, path+"."+w.Type().Field(i).Name, w.Field(i), g.Field(i))
		}
	case reflect.Interface, reflect.Pointer:
		if w.IsNil() || g.IsNil() {
			if w.IsNil() != g.IsNil() {
				add("got %v, want %v", g, w)
			}
			return
		}
		diffValue(d, path, w.Elem(), g.Elem())
	default:
		if !reflect.DeepEqual(w.Interface(), g.Interface()) {
			add("got %#v, want %#v", g, w)
		}
	}
}

// le returns vals in little-endian byte order (bools as 0/1 bytes).
func le[T any](vals ...T) []byte {
	var b []byte
	for _, v := range vals {
		var err error
		if b, err = binary.Append(b, binary.LittleEndian, v); err != nil {
			panic(err)
		}
	}
	return b
}

// lenPrefixed returns elems in the BYTES layout.
func lenPrefixed(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

// withBinary appends tensors to a JSON header and returns the body and the
// Inference-Header-Content-Length.
func withBinary(header string, tensors ...[]byte) ([]byte, int) {
	body := []byte(header)
	for _, t := range tensors {
		body = append(body, t...)
	}
	return body, len(header)
}

// wantInvalid fails unless err is a KindInvalid error (HTTP 400) whose
// message has the codec prefix and every one of subs.
func wantInvalid(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	if k := inference.KindOf(err); k != inference.KindInvalid {
		t.Errorf("KindOf(%v) = %v, want KindInvalid", err, k)
	}
	if s := inference.HTTPStatus(err); s != 400 {
		t.Errorf("HTTPStatus(%v) = %d, want 400", err, s)
	}
	if !errors.Is(err, inference.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	if !strings.HasPrefix(err.Error(), "codec: ") {
		t.Errorf("error %q lacks the %q prefix", err, "codec: ")
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func mustDataType(t *testing.T, s string) inference.DataType {
	t.Helper()
	dt, ok := inference.ParseDataType(s)
	if !ok {
		t.Fatalf("bad datatype %q", s)
	}
	return dt
}
