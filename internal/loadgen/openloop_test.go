package loadgen

import (
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestParseRatePattern(t *testing.T) {
	good := map[string]RatePattern{
		"":                    {},
		"constant":            {},
		"step:2600@5s":        {Kind: "step", Rate: 2600, At: 5 * time.Second},
		"burst:5000@2s+500ms": {Kind: "burst", Rate: 5000, At: 2 * time.Second, For: 500 * time.Millisecond},
		"step:0.5@0s":         {Kind: "step", Rate: 0.5},
	}
	for in, want := range good {
		got, err := ParseRatePattern(in)
		if err != nil || got != want {
			t.Errorf("ParseRatePattern(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ParseRatePattern(got.String()); err != nil || again != got {
			t.Errorf("%q: String() %q reads back as %+v, %v", in, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"ramp:100@1s":        "kind \"ramp\"",
		"step:100":           "want step:RATE@AT",
		"step:-1@1s":         "rate \"-1\"",
		"step:NaN@1s":        "rate \"NaN\"",
		"step:2e6@1s":        "at most 1000000",
		"step:100@-1s":       "start \"-1s\"",
		"step:100@soon":      "start \"soon\"",
		"burst:100@1s":       "needs its length",
		"burst:100@1s+0s":    "length \"0s\"",
		"burst:100@1s+11m0s": "length \"11m0s\"",
	}
	for in, want := range bad {
		if _, err := ParseRatePattern(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRatePattern(%q) = %v, want an error about %s", in, err, want)
		}
	}
}

func FuzzParseRatePattern(f *testing.F) {
	for _, s := range []string{"", "step:2600@5s", "burst:5000@2s+500ms", "burst:1@0s+1ns", "step:1e-300@1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseRatePattern(s)
		if err != nil {
			return
		}
		if !(p.Rate >= 0 && p.Rate <= MaxRate) || p.At < 0 || p.For < 0 {
			t.Fatalf("%q: accepted out of range: %+v", s, p)
		}
		if again, err := ParseRatePattern(p.String()); err != nil || again != p {
			t.Fatalf("%q: String() %q reads back as %+v, %v", s, p.String(), again, err)
		}
	})
}

// TestArrivalsFollowThePattern checks the Poisson process's rate in each
// part of a burst pattern, over a fixed seed (so the counts are exact
// numbers of this seed; the bounds are those of any seed, 5 sigma).
func TestArrivalsFollowThePattern(t *testing.T) {
	p := RatePattern{Kind: "burst", Rate: 5000, At: 2 * time.Second, For: time.Second}
	a := &arrivals{base: 1000, p: p, rng: rand.New(rand.NewPCG(1, 2))}
	var parts [3]int // before, during, after the burst
	for at := a.next(); at < 4*time.Second; at = a.next() {
		switch {
		case at < 2*time.Second:
			parts[0]++
		case at < 3*time.Second:
			parts[1]++
		default:
			parts[2]++
		}
	}
	for i, want := range []float64{2000, 5000, 1000} {
		if d := float64(parts[i]) - want; d*d > 25*want {
			t.Errorf("part %d: %d arrivals, want %v ± 5σ", i, parts[i], want)
		}
	}
}

// TestOpenLoopOffersTheSchedule runs an open loop at a fast server: every
// arrival due before the end is sent and answered, and the count is the
// seeded schedule's.
func TestOpenLoopOffersTheSchedule(t *testing.T) {
	cfg := Config{URL: fastServer(t), Rate: 2000, Duration: 300 * time.Millisecond, Seed: 7}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := cfg.validate()
	a := &arrivals{base: 2000, p: s.pattern, rng: rand.New(rand.NewPCG(7, 0x9e3779b97f4a7c15))}
	want := int64(0)
	for a.next() < 300*time.Millisecond {
		want++
	}
	if res.Offered != want || res.Dropped != 0 || res.Requests != want || res.Errors != 0 {
		t.Errorf("offered %d, dropped %d, sent %d, %d errors; want %d offered and sent, none dropped or failed",
			res.Offered, res.Dropped, res.Requests, res.Errors, want)
	}
	if res.P999 < res.P99 || res.Max < res.P999 {
		t.Errorf("p99 %v, p999 %v, max %v: out of order", res.P99, res.P999, res.Max)
	}
}

// TestOpenLoopDropsWhenAllBusy checks that an arrival that finds every
// client busy is dropped and counted, not queued behind them.
func TestOpenLoopDropsWhenAllBusy(t *testing.T) {
	release := make(chan struct{})
	var got atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		got.Add(1)
		<-release
		ctx.SetBodyString(`{"model_name":"m","outputs":[]}`)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	r, _, _ := newTestRun(t, Config{URL: "http://" + ln.Addr().String() + "/v2/models/m/infer", Rate: MaxRate, Requests: 10, Clients: 2})
	done := make(chan struct{})
	go func() {
		r.openLoop(time.Now())
		close(done)
	}()
	for r.offered.Load() < 10 || got.Load() < 2 { // wait for the state, not for a time
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-done
	var ok int64
	for _, c := range r.clients {
		ok += c.ok
	}
	if d := r.dropped.Load(); d != 8 || ok != 2 {
		t.Errorf("%d dropped, %d answered; want 8 dropped while the 2 clients were busy, 2 answered", d, ok)
	}
}
