package codec
import ("testing"; "github.com/batchmesh/batchmesh/internal/inference")
func TestZZ(t *testing.T) {
	b, err := parseData("x", inference.FP16, []byte("[1.000488282181322574615478515625]"), 1)
	t.Logf("%x %v", b, err)
	b, err = parseData("x", inference.BF16, []byte("[1.003906250931322574615478515625]"), 1)
	t.Logf("%x %v", b, err)
}
