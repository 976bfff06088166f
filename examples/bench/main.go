// Command bench drives an Open Inference Protocol v2 infer endpoint with a
// closed-loop load (package internal/loadgen) and reports rows per second,
// latency percentiles and errors. With -compare it runs the same load
// against a second endpoint right after the first and prints both side by
// side with their ratio, as every batchmesh target is stated.
//
// Usage:
//
//	bench -target URL [-compare URL] [-protocol v2|openai|grpc] [-model M]
//	      [-clients N] [-duration D] [-requests N]
//	      [-rows N] [-rows-max N] [-cols N] [-datatype T] [-input NAME]
//	      [-repeat F] [-distinct N] [-seed N] [-binary] [-timeout D]
//	      [-header K=V ...] [-rate R [-rate-pattern P]] [-json]
//
// Examples:
//
//	# 64 one-row clients through the sidecar for 10s, then straight to the runtime
//	bench -target http://127.0.0.1:15001/v2/models/bert/infer \
//	      -compare http://127.0.0.1:8000/v2/models/bert/infer -clients 64
//
//	# cache hits: every request repeats one of 8 hot bodies
//	bench -target http://127.0.0.1:15001/v2/models/bert/infer -clients 32 -repeat 1
//
//	# 100,000 requests of 1 to 8 rows in the binary tensor format, low priority, as JSON
//	bench -target http://127.0.0.1:15001/v2/models/bert/infer -requests 100000 \
//	      -rows 1 -rows-max 8 -binary -header X-Batchmesh-Priority=low -json
//
//	# gRPC ModelInfer callers through the sidecar, then straight to the runtime's gRPC port
//	bench -protocol grpc -model bert -target grpc://127.0.0.1:15001 \
//	      -compare grpc://127.0.0.1:8001 -clients 256
//
//	# open loop: 2000 one-row requests a second (Poisson), stepping to 2600/s after 5s
//	bench -target http://127.0.0.1:15001/v2/models/bert/infer -rate 2000 -rate-pattern step:2600@5s
//
// A progress line goes to stderr each second; the results go to stdout, as
// text or, with -json, as one JSON object:
//
//	{"target": {"url": ..., "result": {...}}, "compare": {...}, "ratio": {"rows_per_sec": ..., "p50": ...}}
//
// where compare and ratio are present only with -compare, and result holds
// loadgen.Result's fields (durations in nanoseconds). The exit status is 2
// for bad flags and 1 when a run could not be made.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/batchmesh/batchmesh/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

// headerFlags collects repeated -header K=V values.
type headerFlags map[string]string

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("header %q: want NAME=VALUE", v)
	}
	h[k] = val
	return nil
}

// output is the -json document.
type output struct {
	Target  namedResult  `json:"target"`
	Compare *namedResult `json:"compare,omitempty"`
	Ratio   *ratio       `json:"ratio,omitempty"`
}

type namedResult struct {
	URL    string         `json:"url"`
	Result loadgen.Result `json:"result"`
}

type ratio struct {
	RowsPerSec float64 `json:"rows_per_sec"`
	P50        float64 `json:"p50"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	nameA, nameB := names(f.target, f.compare)
	width := max(len(nameA), len(nameB))
	a, err := load(ctx, f.cfg, f.target, nameA, width, stderr)
	if err != nil {
		return err
	}
	out := output{Target: namedResult{URL: f.target, Result: a}}
	var b loadgen.Result
	if f.compare != "" {
		b, err = load(ctx, f.cfg, f.compare, nameB, width, stderr)
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			_, _ = fmt.Fprintf(stderr, "bench: interrupted; %s not run\n", nameB)
			f.compare = ""
		case err != nil:
			return err
		default:
			out.Compare = &namedResult{URL: f.compare, Result: b}
			out.Ratio = &ratio{RowsPerSec: div(a.RowsPerSec, b.RowsPerSec), P50: div(float64(a.P50), float64(b.P50))}
		}
	}

	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	text := fmt.Sprintf("%s: %v\n", nameA, a)
	if f.compare != "" {
		text += fmt.Sprintf("%s: %v\n\n%s", nameB, b, loadgen.FormatComparison(a, b, nameA, nameB))
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// flags are the command line's settings.
type flags struct {
	target  string // the infer URL to load
	compare string // the second one, or ""
	asJSON  bool
	cfg     loadgen.Config // the load, without URL
}

// parseFlags parses the command line; its errors are usageErrors, or
// flag.ErrHelp.
func parseFlags(args []string, stderr io.Writer) (flags, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	headers := headerFlags{}
	target := fs.String("target", "", "full infer URL to load, e.g. http://127.0.0.1:15001/v2/models/bert/infer (required)")
	compare := fs.String("compare", "", "a second infer URL to run the same load against right after, for a side-by-side comparison")
	clients := fs.Int("clients", 1, "concurrent closed-loop clients, each with one request in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long each run lasts (at most 10m; 0 with -requests: until the requests are sent)")
	requests := fs.Int("requests", 0, "stop each run after this many requests (0: no limit but -duration)")
	rows := fs.Int("rows", 1, "rows per request")
	rowsMax := fs.Int("rows-max", 0, "with a value above -rows, requests carry a uniform mix of -rows..-rows-max rows")
	cols := fs.Int("cols", 16, "elements per row: the input's shape is [rows, cols]")
	datatype := fs.String("datatype", "FP32", "the input's v2 datatype (BOOL, UINT8 … INT64, FP16, BF16, FP32, FP64, BYTES)")
	input := fs.String("input", "input", "the input's name")
	repeat := fs.Float64("repeat", 0, "share of requests (0 to 1) that repeat one of 8 hot bodies, for cache tests")
	distinct := fs.Int("distinct", 0, "distinct request bodies to pre-encode (0: 1024, fewer for big bodies)")
	seed := fs.Uint64("seed", 0, "seed of the pseudo-random request values")
	binary := fs.Bool("binary", false, "send the binary tensor extension instead of JSON")
	protocol := fs.String("protocol", "v2", "the body's API: v2, openai (embeddings requests to a /v1/embeddings -target; each row one string input), or grpc (ModelInfer calls with raw FP32 inputs to a grpc://host:port -target, with -model)")
	model := fs.String("model", "", "with -protocol openai or grpc, the model named in the body or call")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout; a timeout counts as an error with status 0")
	fs.Var(headers, "header", "an extra request header NAME=VALUE, e.g. X-Batchmesh-Priority=high (repeatable)")
	asJSON := fs.Bool("json", false, "print the results as one JSON object, for scripts")
	rate := fs.Float64("rate", 0, "open loop: send requests at Poisson arrival times of this many per second, answered or not (-clients is then the most in flight, default 1024)")
	pattern := fs.String("rate-pattern", "", "with -rate: step:RATE@AT (the rate from AT on) or burst:RATE@AT+FOR, e.g. step:2600@5s, burst:5000@2s+500ms")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flags{}, err
		}
		return flags{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return flags{}, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *target == "" {
		return flags{}, usageError{errors.New("-target is required: the full infer URL to load")}
	}
	if *rate > 0 && !flagSet(fs, "clients") {
		*clients = 0 // the open loop's default bound on requests in flight
	}
	if *requests > 0 && !flagSet(fs, "duration") {
		*duration = 0 // -requests alone: run until they are sent
	}

	cfg := loadgen.Config{
		Clients:  *clients,
		Duration: *duration,
		Requests: *requests,
		Rows:     *rows,
		RowsMax:  *rowsMax,
		Input:    *input,
		Datatype: *datatype,
		Cols:     *cols,
		Repeat:   *repeat,
		Distinct: *distinct,
		Seed:     *seed,
		Binary:   *binary,
		Protocol: *protocol,
		Model:    *model,
		Headers:  headers,
		Timeout:  *timeout,

		Rate:        *rate,
		RatePattern: *pattern,
	}
	return flags{target: *target, compare: *compare, asJSON: *asJSON, cfg: cfg}, nil
}

// load runs cfg against target, printing progress to stderr under name,
// padded to width.
func load(ctx context.Context, cfg loadgen.Config, target, name string, width int, stderr io.Writer) (loadgen.Result, error) {
	if cfg.Protocol == ProtocolGRPC {
		return loadGRPC(ctx, cfg, target, name, width, stderr)
	}
	cfg.URL = target
	cfg.OnProgress = func(s loadgen.Snapshot) {
		_, _ = fmt.Fprintf(stderr, "%-*s %4.0fs %10.1f rows/s  p50 %-8v p99 %-8v %d errors\n",
			width, name, s.Elapsed.Seconds(), s.RowsPerSec, round(s.P50), round(s.P99), s.Errors)
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil && ctx.Err() == nil && !errors.Is(err, loadgen.ErrUnreachable) {
		return res, usageError{err} // a bad Config: flags that do not fit together
	}
	return res, err
}

// names gives the two runs short names for the output: their host:port, or
// "target" and "compare" when the hosts do not tell them apart.
func names(target, compare string) (string, string) {
	host := func(s string) string {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			return u.Host
		}
		return ""
	}
	a, b := host(target), host(compare)
	if compare == "" && a != "" {
		return a, ""
	}
	if a == "" || b == "" || a == b {
		return "target", "compare"
	}
	return a, b
}

// round keeps three significant digits of d.
func round(d time.Duration) time.Duration {
	unit := time.Duration(1)
	for d/unit >= 1000 {
		unit *= 10
	}
	return d.Round(unit)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
