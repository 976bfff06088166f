package chaos_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The eight bodies of TestLargeBodiesRSS: 60 MiB of FP32 rows each, sent
// in the v2 binary tensor form (a JSON header, then the raw tensor), so that
// decoding them costs little CPU and what is measured is the bytes held.
const (
	bigBodies   = 8
	bigRows     = 16
	bigBodySize = 60 << 20
)

// rssBound is the documented bound of the sidecar's peak resident memory
// (docs/chaos.md): 64 MiB for the process itself, and four copies of each
// body its budget admits — as received, as a batch tensor, as the upstream
// request, and its answer while the reply is written — with the default
// -max-body-in-flight of 4 × -max-body (64 MiB). The sidecar sets Go's
// soft memory limit just under it.
const (
	defaultMaxBody = 64 << 20
	defaultBudget  = 4 * defaultMaxBody
	rssBound       = 64<<20 + 4*defaultBudget
)

// bigRequest is a raw HTTP/1.1 request of one 60 MiB binary tensor.
func bigRequest() []byte {
	cols := bigBodySize / 4 / bigRows
	header := fmt.Sprintf(`{"inputs":[{"name":"input","shape":[%d,%d],"datatype":"FP32","parameters":{"binary_data_size":%d}}]}`, bigRows, cols, bigRows*cols*4)
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST /v2/models/m/infer HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s",
		len(header), len(header)+bigRows*cols*4, header)
	tensor := make([]byte, bigRows*cols*4)
	for i := range tensor {
		tensor[i] = byte(i*7 + i>>12)
	}
	b.Write(tensor)
	return b.Bytes()
}

// TestLargeBodiesRSS sends eight 60 MiB bodies at once. The sidecar admits
// what its body budget allows (200 with the runtime's answer, byte for
// byte), refuses the rest with 429, and its peak RSS (VmHWM) stays under
// rssBound.
func TestLargeBodiesRSS(t *testing.T) {
	// The bodies take seconds to send and compute on a loaded machine: a
	// long deadline, and probes far apart, since the busy runtime may miss
	// two 1 s probes in a row and be taken out of rotation (that is not
	// what this test measures).
	h := newHostileRigTimeout(t, time.Minute, "-probe-interval", "30s")
	raw := bigRequest()
	direct := exchange(t, h.rt.addr, raw)
	if direct.status != http.StatusOK {
		t.Fatalf("direct call to the runtime: %d %.300s", direct.status, direct.body)
	}
	want := direct.body
	pid := h.sc.proc.cmd.Process.Pid
	before := vmHWM(t, pid)

	var wg sync.WaitGroup
	codes := make([]int, bigBodies)
	for i := range bigBodies {
		wg.Go(func() {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Errorf("body %d: %v", i, err)
				return
			}
			defer c.Close()
			a, err := exchangeOn(c, raw)
			codes[i] = a.status
			switch {
			case err != nil:
				t.Errorf("body %d: %v", i, err)
			case a.status == http.StatusOK && !bytes.Equal(a.body, want):
				t.Errorf("body %d: 200 with the wrong answer %.300s", i, a.body)
			case a.status == http.StatusTooManyRequests && a.header.Get("Retry-After") == "":
				t.Errorf("body %d: 429 without Retry-After", i)
			case a.status != http.StatusOK && a.status != http.StatusTooManyRequests:
				t.Errorf("body %d: %d %.300s; want 200, or 429 past the body budget", i, a.status, a.body)
			}
		})
	}
	wg.Wait()
	peak := vmHWM(t, pid)
	ok := 0
	for _, c := range codes {
		if c == http.StatusOK {
			ok++
		}
	}
	if ok == 0 {
		t.Errorf("no body was admitted (%v); the budget of 4 × -max-body admits four", codes)
	}
	t.Logf("eight concurrent 60 MiB bodies: statuses %v; sidecar VmHWM %d MiB before, %d MiB after (bound %d MiB)", codes, before>>20, peak>>20, rssBound>>20)
	t.Logf("sidecar VmRSS once every body is answered: %d MiB", vmStatus(t, pid, "VmRSS:")>>20)
	if peak > rssBound {
		t.Errorf("the sidecar's peak RSS is %d MiB; the documented bound is %d MiB", peak>>20, rssBound>>20)
	}
}

// vmHWM reads the peak resident set size of process pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	return vmStatus(t, pid, "VmHWM:")
}

// vmStatus reads field (e.g. "VmRSS:") of process pid's status, in bytes.
func vmStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
