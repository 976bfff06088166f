package loadreport

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Report is one parsed ORCA load report.
type Report struct {
	Utilization float64            // application_utilization (or cpu_utilization when absent); -1 if neither
	RPS         float64            // rps_fractional; -1 if absent
	Named       map[string]float64 // named_metrics.NAME, nil if none
}

// NamedQueueDepth is the named metric in which a runtime reports the
// batches waiting for a slot beyond its free ones (batchmesh's model
// runtime sends it; the sidecar's adaptive concurrency reads it).
const NamedQueueDepth = "queue_depth"

// Queue returns the runtime's reported queue depth, if the report has one.
// A nil report has none.
func (r *Report) Queue() (int, bool) {
	if r == nil {
		return 0, false
	}
	q, ok := r.Named[NamedQueueDepth]
	if !ok {
		return 0, false
	}
	return int(min(q, 1<<30)), true
}

// ErrNotText is returned for a header that is not in ORCA's TEXT form.
var ErrNotText = errors.New("loadreport: not an ORCA TEXT report")

// Parse parses the TEXT form of the endpoint-load-metrics header:
// "TEXT key=value, key=value". Unknown keys are ignored; a key without
// '=' or a value that is not a finite, non-negative number is an error.
func Parse(h string) (Report, error) {
	r := Report{Utilization: -1, RPS: -1}
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), "TEXT")
	if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t') {
		return Report{}, ErrNotText
	}
	cpu := -1.0
	for field := range strings.SplitSeq(rest, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return Report{}, errors.New("loadreport: field without '=': " + strconv.Quote(field))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return Report{}, errors.New("loadreport: bad value for " + strconv.Quote(k) + ": " + strconv.Quote(v))
		}
		switch {
		case k == "application_utilization":
			r.Utilization = f
		case k == "cpu_utilization":
			cpu = f
		case k == "rps_fractional":
			r.RPS = f
		case strings.HasPrefix(k, "named_metrics."):
			if r.Named == nil {
				r.Named = map[string]float64{}
			}
			r.Named[strings.TrimPrefix(k, "named_metrics.")] = f
		}
	}
	if r.Utilization < 0 {
		r.Utilization = cpu
	}
	return r, nil
}
