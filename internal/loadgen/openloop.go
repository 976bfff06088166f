package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// MaxRate bounds Config.Rate and the rates of a RatePattern (requests per
// second).
const MaxRate = 1_000_000

// defaultOpenClients is the most requests in flight of an open-loop run
// whose Config leaves Clients at 0.
const defaultOpenClients = 1024

// RatePattern changes an open-loop run's rate once (step) or for a while
// (burst). The zero value keeps Config.Rate for the whole run.
type RatePattern struct {
	// Kind is "" (constant), "step" (Rate from At to the end) or "burst"
	// (Rate from At for For, then back to Config.Rate).
	Kind string
	Rate float64
	At   time.Duration
	For  time.Duration
}

// ParseRatePattern parses "", "step:RATE@AT" (e.g. step:2600@5s) or
// "burst:RATE@AT+FOR" (e.g. burst:5000@2s+500ms). RATE is in requests per
// second, AT and FOR are Go durations from the start of the run.
func ParseRatePattern(s string) (RatePattern, error) {
	if s == "" || s == "constant" {
		return RatePattern{}, nil
	}
	kind, rest, _ := strings.Cut(s, ":")
	if kind != "step" && kind != "burst" {
		return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: kind %q is not one of constant, step, burst (e.g. step:2600@5s, burst:5000@2s+500ms)", s, kind)
	}
	rateText, when, ok := strings.Cut(rest, "@")
	if !ok {
		return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: want %s:RATE@AT%s", s, kind, map[bool]string{true: "+FOR"}[kind == "burst"])
	}
	p := RatePattern{Kind: kind}
	var err error
	if p.Rate, err = strconv.ParseFloat(rateText, 64); err != nil || !(p.Rate > 0 && p.Rate <= MaxRate) {
		return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: rate %q must be a number above 0 and at most %d requests per second", s, rateText, MaxRate)
	}
	at, dur := when, ""
	if kind == "burst" {
		if at, dur, ok = strings.Cut(when, "+"); !ok {
			return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: a burst needs its length: burst:RATE@AT+FOR", s)
		}
		if p.For, err = time.ParseDuration(dur); err != nil || p.For <= 0 || p.For > MaxDuration {
			return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: length %q must be a duration above 0 and at most %v", s, dur, MaxDuration)
		}
	}
	if p.At, err = time.ParseDuration(at); err != nil || p.At < 0 || p.At > MaxDuration {
		return RatePattern{}, fmt.Errorf("loadgen: rate pattern %q: start %q must be a duration from 0 to %v", s, at, MaxDuration)
	}
	return p, nil
}

// String is the pattern as ParseRatePattern reads it.
func (p RatePattern) String() string {
	rate := strconv.FormatFloat(p.Rate, 'g', -1, 64)
	switch p.Kind {
	case "step":
		return "step:" + rate + "@" + p.At.String()
	case "burst":
		return "burst:" + rate + "@" + p.At.String() + "+" + p.For.String()
	}
	return ""
}

// rateAt is the rate at t into the run and the time from which it changes
// (negative when it never does).
func (p RatePattern) rateAt(base float64, t time.Duration) (float64, time.Duration) {
	switch {
	case p.Kind == "" || t >= p.At+p.For && p.Kind == "burst":
		return base, -1
	case t < p.At:
		return base, p.At
	case p.Kind == "burst":
		return p.Rate, p.At + p.For
	}
	return p.Rate, -1
}

// arrivals yields the times of a Poisson process of the pattern's rates
// from the start of the run, from a seeded source: the same Config gives
// the same times.
type arrivals struct {
	base float64
	p    RatePattern
	rng  *rand.Rand
	t    time.Duration
}

func (a *arrivals) next() time.Duration {
	for {
		rate, change := a.p.rateAt(a.base, a.t)
		gap := time.Duration(a.rng.ExpFloat64() / rate * float64(time.Second))
		if change >= 0 && a.t+gap >= change {
			a.t = change // memoryless: start afresh at the new rate
			continue
		}
		a.t += gap
		return a.t
	}
}

// openLoop sends requests at Poisson arrival times until the run is over,
// each by one of the clients (the most requests in flight). An arrival
// that finds every client busy is dropped and counted. Latency is measured
// from the arrival's scheduled time, so a sender that falls behind shows
// in the latencies rather than hiding them.
func (r *run) openLoop(start time.Time) {
	// free holds a token per idle client: an arrival takes one or is
	// dropped, so work never blocks the schedule.
	free := make(chan struct{}, len(r.clients))
	work := make(chan openJob, len(r.clients))
	var wg sync.WaitGroup
	for _, c := range r.clients {
		free <- struct{}{}
		wg.Go(func() { r.worker(c, work, free) })
	}
	defer wg.Wait()
	defer close(work)
	arr := &arrivals{base: r.s.Rate, p: r.s.pattern, rng: rand.New(rand.NewPCG(r.s.Seed, 0x9e3779b97f4a7c15))}
	for {
		at := start.Add(arr.next())
		if r.s.deadline && !at.Before(r.deadline) {
			return
		}
		t := r.next.Add(1) - 1
		if r.limit > 0 && t >= r.limit {
			return
		}
		if d := time.Until(at); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-r.done:
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		r.offered.Add(1)
		select {
		case <-free:
			work <- openJob{seq: t, at: at}
		default:
			r.dropped.Add(1)
		}
	}
}

type openJob struct {
	seq uint64
	at  time.Time
}

// worker sends the jobs it is given, one at a time.
func (r *run) worker(c *client, work <-chan openJob, free chan<- struct{}) {
	req := r.newRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for j := range work {
		r.send(c, req, resp, r.pool.pick(j.seq), j.at)
		free <- struct{}{}
	}
}

// checkRate checks Rate and RatePattern and defaults Clients for an
// open-loop run.
func (s *settings) checkRate() error {
	if s.Rate == 0 && s.RatePattern == "" {
		return nil
	}
	if !(s.Rate > 0 && s.Rate <= MaxRate) || math.IsInf(s.Rate, 0) {
		return fmt.Errorf("loadgen: Rate %v must be above 0 and at most %d requests per second (a RatePattern needs a Rate)", s.Rate, MaxRate)
	}
	p, err := ParseRatePattern(s.RatePattern)
	if err != nil {
		return err
	}
	s.pattern = p
	if s.Clients == 0 {
		s.Clients = defaultOpenClients
	}
	return nil
}
