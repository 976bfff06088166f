package health

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

var six = []string{"e0", "e1", "e2", "e3", "e4", "e5"}

// runSix starts Run, probing every second with probes that answer, on a
// table of six peers with consecutive-failure ejection off, inside the
// calling synctest bubble.
func runSix(t *testing.T, o Outlier) (*Table, func()) {
	t.Helper()
	o.ConsecutiveFailures = -1
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = 50
	}
	f := &fakeProbe{fail: map[string]error{}, calls: map[string]int{}}
	tab := New(Config{Probe: f.probe, Interval: time.Second, Outlier: o, Peers: func(string) []string { return six }})
	ctx, cancel := context.WithCancel(context.Background())
	tab.Probe(ctx, six)
	done := make(chan struct{})
	go func() { defer close(done); tab.Run(ctx, func() []string { return six }) }()
	return tab, func() { cancel(); <-done }
}

// calls reports n calls to addr of which failed fail, interleaved so that
// no two failures are in a row unless more than half fail.
func calls(tab *Table, addr string, n, fail int) {
	for i := range n {
		tab.ReportCall(addr, (i+1)*fail/n > i*fail/n)
	}
}

// TestFailurePercentage: at the end of the 10 s interval, and not before,
// an endpoint that failed at least 85% of 50 or more calls is ejected when
// five peers made 50 calls; the thresholds are inclusive.
func TestFailurePercentage(t *testing.T) {
	for _, tt := range []struct {
		name    string
		o       Outlier
		n, fail int // e0's calls and failures
		busy    int // peers besides e0 with 100 successful calls
		ejected bool
	}{
		{name: "90% of 100", n: 100, fail: 90, busy: 5, ejected: true},
		{name: "85% of 100, at the threshold", n: 100, fail: 85, busy: 5, ejected: true},
		{name: "84% of 100, below", n: 100, fail: 84, busy: 5},
		{name: "all of 50, the volume", n: 50, fail: 50, busy: 5, ejected: true},
		{name: "all of 49, below the volume", n: 49, fail: 49, busy: 5},
		{name: "four busy hosts, e0 included", n: 100, fail: 100, busy: 3},
		{name: "five busy hosts, e0 included", n: 100, fail: 100, busy: 4, ejected: true},
		{name: "not enforced", o: Outlier{EnforcingFailurePercentage: -1}, n: 100, fail: 100, busy: 5},
		{name: "threshold 50", o: Outlier{FailurePercentageThreshold: 50}, n: 100, fail: 50, busy: 5, ejected: true},
		{name: "volume 10, minimum hosts 2", o: Outlier{FailurePercentageRequestVolume: 10, FailurePercentageMinimumHosts: 2}, n: 10, fail: 9, busy: 1, ejected: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tab, stop := runSix(t, tt.o)
				defer stop()
				calls(tab, "e0", tt.n, tt.fail)
				for _, p := range six[1 : 1+tt.busy] {
					calls(tab, p, 100, 0)
				}
				time.Sleep(9500 * time.Millisecond)
				if !tab.Up("e0") {
					t.Fatal("ejected before the interval ended")
				}
				time.Sleep(time.Second) // past the evaluation at 10 s
				if got := tab.Ejected("e0"); got != tt.ejected {
					t.Errorf("e0 ejected %v, want %v", got, tt.ejected)
				}
				for _, p := range six[1:] {
					if !tab.Up(p) {
						t.Errorf("%s ejected", p)
					}
				}
				if !tt.ejected {
					return
				}
				// The ejection lasts BaseEjectionTime (30 s).
				time.Sleep(29 * time.Second)
				if tab.Up("e0") {
					t.Error("the ejection ended before 30 s")
				}
				time.Sleep(time.Second)
				if !tab.Up("e0") {
					t.Error("the ejection did not end after 30 s")
				}
			})
		})
	}
}

// TestFailurePercentageWindows: the counts start again at each interval:
// 45 failed calls in each of two intervals are never 50 in one.
func TestFailurePercentageWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, stop := runSix(t, Outlier{})
		defer stop()
		time.Sleep(500 * time.Millisecond) // clear of the ticks
		for range 3 {
			calls(tab, "e0", 45, 45)
			for _, p := range six[1:] {
				calls(tab, p, 100, 0)
			}
			time.Sleep(10 * time.Second)
			if tab.Ejected("e0") {
				t.Fatal("ejected on counts of two intervals together")
			}
		}
	})
}

// TestFailurePercentageMaxEjection: of six endpoints all failing, at most
// MaxEjectionPercent (default 10%: one) are ejected, the first by address.
func TestFailurePercentageMaxEjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, stop := runSix(t, Outlier{MaxEjectionPercent: 10})
		defer stop()
		for _, p := range six {
			calls(tab, p, 100, 100)
		}
		time.Sleep(10500 * time.Millisecond)
		var got []string
		for _, p := range six {
			if tab.Ejected(p) {
				got = append(got, p)
			}
		}
		if fmt.Sprint(got) != "[e0]" {
			t.Errorf("ejected %v, want [e0]", got)
		}
	})
}

// TestReportCallSuccessAllocs: a success on the data path counts without
// allocating.
func TestReportCallSuccessAllocs(t *testing.T) {
	tab := New(Config{})
	tab.ReportCall("a", true)
	if n := testing.AllocsPerRun(1000, func() { tab.ReportCall("a", false) }); n != 0 {
		t.Errorf("%v allocations per success, want 0", n)
	}
}

func BenchmarkReportCallSuccess(b *testing.B) {
	tab := New(Config{})
	tab.ReportCall("a", true)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tab.ReportCall("a", false)
		}
	})
}
