package loadgen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Result is what one Run measured. Rates and latencies count only
// successful (200) requests; everything else is in Errors and ByStatus. The
// maps are never nil, and a Result shares nothing with the run that made it.
type Result struct {
	// Requests is every request that completed, successful or not.
	Requests int64 `json:"requests"`
	// Rows is the rows of the successful requests.
	Rows int64 `json:"rows"`
	// Errors is the requests answered with a status other than 200 or that
	// failed in transport (timeouts, refused or reset connections).
	Errors int64 `json:"errors"`
	// ByStatus counts requests by HTTP status, 200 included; transport
	// errors count under 0.
	ByStatus map[int]int64 `json:"by_status"`
	// FirstError describes the first error seen (status and a start of the
	// body, or the transport error), or is empty.
	FirstError string `json:"first_error,omitempty"`
	// Elapsed is the run's wall time, from the first request sent to the
	// last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// RowsPerSec and ReqPerSec are Rows and successful requests over Elapsed.
	RowsPerSec float64 `json:"rows_per_sec"`
	ReqPerSec  float64 `json:"req_per_sec"`
	// Latency percentiles of successful requests (within 1%), and the
	// exact maximum.
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
	// Offered is, in an open-loop run (Config.Rate), the requests due
	// before the end, OfferedPerSec their rate, and Dropped those not sent
	// because every client was busy; all 0 in a closed-loop run.
	Offered       int64   `json:"offered,omitempty"`
	OfferedPerSec float64 `json:"offered_per_sec,omitempty"`
	Dropped       int64   `json:"dropped,omitempty"`
	// MeanBatchRows is the mean of the X-Batchmesh-Batch-Size response
	// header over the answers that carried it; 0 if none did.
	MeanBatchRows float64 `json:"mean_batch_rows"`
	// CacheResults counts the X-Batchmesh-Cache header's values (hit, miss,
	// partial, coalesced, bypass) over the answers that carried it.
	CacheResults map[string]int64 `json:"cache_results"`
}

// Snapshot is the progress of a run over the interval since the previous
// Snapshot (or since the start, for the first).
type Snapshot struct {
	// Elapsed is the time since the run started.
	Elapsed time.Duration
	// RowsPerSec, P50 and P99 are of the successful requests of the
	// interval; Errors counts the interval's errors.
	RowsPerSec float64
	P50, P99   time.Duration
	Errors     int64
}

// String returns one human line, e.g.
//
//	5000 req, 5000 rows in 10.0s: 500 rows/s, 500 req/s; p50 1.94ms p90 2.21ms p99 3.05ms max 7.1ms; 0 errors; batch 4.00 rows; cache miss=5000
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d req, %d rows in %v: %s rows/s, %s req/s; p50 %v p90 %v p99 %v max %v; %d errors",
		r.Requests, r.Rows, round(r.Elapsed), rate(r.RowsPerSec), rate(r.ReqPerSec),
		round(r.P50), round(r.P90), round(r.P99), round(r.Max), r.Errors)
	if r.Errors > 0 {
		b.WriteString(" (")
		sep := ""
		for _, s := range sortedKeys(r.ByStatus) {
			if s != 200 {
				fmt.Fprintf(&b, "%s%s: %d", sep, statusName(s), r.ByStatus[s])
				sep = ", "
			}
		}
		b.WriteString(")")
	}
	if r.Offered > 0 {
		fmt.Fprintf(&b, "; open loop: %s req/s offered, p999 %v, %d dropped", rate(r.OfferedPerSec), round(r.P999), r.Dropped)
	}
	if r.MeanBatchRows > 0 {
		fmt.Fprintf(&b, "; batch %.2f rows", r.MeanBatchRows)
	}
	if len(r.CacheResults) > 0 {
		b.WriteString("; cache")
		for _, k := range sortedKeys(r.CacheResults) {
			fmt.Fprintf(&b, " %s=%d", k, r.CacheResults[k])
		}
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "; first error: %s", r.FirstError)
	}
	return b.String()
}

// FormatComparison returns a small aligned table of a and b side by side:
// rows/s, p50, p90, p99 and errors, with a ratio column holding a/b of
// rows/s and of p50.
func FormatComparison(a, b Result, nameA, nameB string) string {
	rows := [][]string{
		{"", nameA, nameB, "ratio"},
		{"rows/s", rate(a.RowsPerSec), rate(b.RowsPerSec), ratio(a.RowsPerSec, b.RowsPerSec)},
		{"p50", round(a.P50).String(), round(b.P50).String(), ratio(float64(a.P50), float64(b.P50))},
		{"p90", round(a.P90).String(), round(b.P90).String(), ""},
		{"p99", round(a.P99).String(), round(b.P99).String(), ""},
		{"errors", strconv.FormatInt(a.Errors, 10), strconv.FormatInt(b.Errors, 10), ""},
	}
	var width [4]int
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	var sb strings.Builder
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			pad := width[i] - utf8.RuneCountInString(cell)
			if i == 0 { // labels to the left, numbers to the right
				line.WriteString(cell)
				line.WriteString(strings.Repeat(" ", pad))
				continue
			}
			line.WriteString(strings.Repeat(" ", pad+2))
			line.WriteString(cell)
		}
		sb.WriteString(strings.TrimRight(line.String(), " "))
		sb.WriteByte('\n')
	}
	return sb.String()
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	r := a / b
	switch {
	case r >= 100:
		return strconv.FormatFloat(r, 'f', 0, 64) + "×"
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64) + "×"
	case r >= 0.1:
		return strconv.FormatFloat(r, 'f', 2, 64) + "×"
	}
	return strconv.FormatFloat(r, 'g', 2, 64) + "×"
}

// rate formats a rate with one decimal below 1000 and none above.
func rate(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// round keeps three significant digits of d.
func round(d time.Duration) time.Duration {
	unit := time.Duration(1)
	for d/unit >= 1000 {
		unit *= 10
	}
	return d.Round(unit)
}

func statusName(s int) string {
	if s == 0 {
		return "transport"
	}
	return strconv.Itoa(s)
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
