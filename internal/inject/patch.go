package inject

import (
	"encoding/json"
	"fmt"

	"gomodules.xyz/jsonpatch/v2"
)

// Patch returns the JSON patch (RFC 6902) that turns before into after,
// computed from their JSON encodings: "[]" when they are equal.
func Patch(before, after any) ([]byte, error) {
	b, err := json.Marshal(before)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	a, err := json.Marshal(after)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(b, a)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	if ops == nil {
		ops = []jsonpatch.Operation{}
	}
	out, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	return out, nil
}
