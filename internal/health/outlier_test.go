package health

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// runTable starts Run on a table with peers a and b, probes always
// answering, inside the calling synctest bubble; it returns the table and
// a stop function.
func runTable(t *testing.T, o Outlier) (*Table, func()) {
	t.Helper()
	f := &fakeProbe{fail: map[string]error{}, calls: map[string]int{}}
	tab := New(Config{Probe: f.probe, Interval: time.Second, Outlier: o})
	ctx, cancel := context.WithCancel(context.Background())
	tab.Probe(ctx, []string{"a", "b"})
	done := make(chan struct{})
	go func() { defer close(done); tab.Run(ctx, func() []string { return []string{"a", "b"} }) }()
	return tab, func() { cancel(); <-done }
}

func fail(tab *Table, addr string, n int) {
	for range n {
		tab.ReportCall(addr, true)
	}
}

// TestEjectionBackOff: five failures in a row eject for 30s (probes
// succeeding meanwhile do not bring it back), the second ejection lasts
// 60s, and the length stops at the maximum.
func TestEjectionBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, stop := runTable(t, Outlier{MaxEjectionTime: 90 * time.Second})
		defer stop()
		fail(tab, "a", 4)
		if !tab.Up("a") {
			t.Fatal("ejected after 4 failures, want 5")
		}
		tab.ReportCall("a", false)
		fail(tab, "a", 4)
		if !tab.Up("a") {
			t.Fatal("a success did not end the run of failures")
		}
		tab.ReportCall("a", true)
		if tab.Up("a") || !tab.Ejected("a") {
			t.Fatal("not ejected after 5 failures in a row")
		}
		for _, want := range []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second, 90 * time.Second} {
			start := time.Now()
			for !tab.Up("a") {
				time.Sleep(time.Second) // fake time: one Run tick
			}
			if got := time.Since(start); got < want || got > want+time.Second {
				t.Errorf("ejection lasted %v, want %v (within one tick)", got, want)
			}
			fail(tab, "a", 5)
			if tab.Up("a") {
				t.Fatal("not ejected again")
			}
		}
	})
}

// TestEjectionMultiplierDecays: after an ejection ends, each quiet
// BaseEjectionTime takes one off the multiplier.
func TestEjectionMultiplierDecays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, stop := runTable(t, Outlier{})
		defer stop()
		fail(tab, "a", 5) // 30s
		time.Sleep(31 * time.Second)
		fail(tab, "a", 5) // 60s
		time.Sleep(61 * time.Second)
		if !tab.Up("a") {
			t.Fatal("second ejection did not end")
		}
		time.Sleep(61 * time.Second) // two quiet periods: multiplier 2 → 0
		fail(tab, "a", 5)
		start := time.Now()
		for !tab.Up("a") {
			time.Sleep(time.Second)
		}
		if got := time.Since(start); got > 31*time.Second {
			t.Errorf("ejection after a quiet spell lasted %v, want the base 30s", got)
		}
	})
}

// TestMaxEjectionKeepsOne: of two peers only one is ejected, whatever the
// other's failures; a lone endpoint is never ejected.
func TestMaxEjectionKeepsOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab, stop := runTable(t, Outlier{})
		defer stop()
		fail(tab, "a", 5)
		fail(tab, "b", 50)
		if tab.Up("a") || !tab.Up("b") {
			t.Errorf("a up %v, b up %v: want a ejected and b kept", tab.Up("a"), tab.Up("b"))
		}
	})
	lone := New(Config{Peers: func(string) []string { return []string{"x"} }})
	fail(lone, "x", 50)
	if !lone.Up("x") {
		t.Error("the only endpoint of its peers was ejected")
	}
	off := New(Config{Outlier: Outlier{ConsecutiveFailures: -1}})
	off.ReportCall("y", false)
	fail(off, "z", 50)
	if !off.Up("z") {
		t.Error("ejected with outlier detection off")
	}
}
