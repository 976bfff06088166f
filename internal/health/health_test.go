package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeProbe answers probes from a map of address → error; it stands in for
// the upstream client's probe, which the proxy's end-to-end tests run
// against real runtimes.
type fakeProbe struct {
	mu    sync.Mutex
	fail  map[string]error
	calls map[string]int
}

func (f *fakeProbe) probe(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[addr]++
	return f.fail[addr]
}

func (f *fakeProbe) set(addr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[addr] = err
}

type change struct {
	addr string
	up   bool
}

func newTable(t *testing.T) (*Table, *fakeProbe, *[]change) {
	t.Helper()
	f := &fakeProbe{fail: map[string]error{}, calls: map[string]int{}}
	var changes []change
	tab := New(Config{Probe: f.probe, OnChange: func(a string, up bool) { changes = append(changes, change{a, up}) }})
	return tab, f, &changes
}

func TestRules(t *testing.T) {
	refused := errors.New("connection refused")
	tests := []struct {
		name string
		// steps: "ok" and "fail" probe the endpoint once, "report" is a
		// data-path failure.
		steps   []string
		wantUp  bool
		changes []change
	}{
		{name: "never seen", wantUp: true},
		{name: "first probe fails: down at once", steps: []string{"fail"}, changes: []change{{"a", false}}},
		{name: "healthy, one failed probe: still up", steps: []string{"ok", "fail"}, wantUp: true},
		{name: "healthy, two failed probes: down", steps: []string{"ok", "fail", "fail"}, changes: []change{{"a", false}}},
		{name: "failure streak broken by a success", steps: []string{"ok", "fail", "ok", "fail"}, wantUp: true},
		{name: "data path failure: down at once", steps: []string{"ok", "report"}, changes: []change{{"a", false}}},
		{name: "back up after one good probe", steps: []string{"ok", "report", "ok"}, wantUp: true, changes: []change{{"a", false}, {"a", true}}},
		{name: "down, then up, then down again", steps: []string{"fail", "ok", "fail", "fail"}, changes: []change{{"a", false}, {"a", true}, {"a", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, f, changes := newTable(t)
			for _, s := range tt.steps {
				switch s {
				case "ok":
					f.set("a", nil)
					tab.Probe(t.Context(), []string{"a"})
				case "fail":
					f.set("a", refused)
					tab.Probe(t.Context(), []string{"a"})
				case "report":
					tab.ReportFailure("a", refused)
				}
			}
			if got := tab.Up("a"); got != tt.wantUp {
				t.Errorf("Up = %v, want %v", got, tt.wantUp)
			}
			if !slices.Equal(*changes, tt.changes) {
				t.Errorf("changes %v, want %v", *changes, tt.changes)
			}
			if tab.Up("other") != true {
				t.Error("an endpoint never seen is not up")
			}
		})
	}
}

func TestProbeCancelledRecordsNothing(t *testing.T) {
	tab, f, changes := newTable(t)
	f.set("a", errors.New("refused"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tab.Probe(ctx, []string{"a"})
	if !tab.Up("a") || len(*changes) != 0 || tab.Probed() {
		t.Errorf("a probe round cut short by shutdown changed the table: up %v, changes %v, probed %v", tab.Up("a"), *changes, tab.Probed())
	}
	tab.Probe(t.Context(), nil)
	if !tab.Probed() {
		t.Error("Probed is false after a full round")
	}
}

func TestRunProbesEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeProbe{fail: map[string]error{}, calls: map[string]int{}}
		tab := New(Config{Probe: f.probe, Interval: 100 * time.Millisecond})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); tab.Run(ctx, func() []string { return []string{"a", "b"} }) }()
		time.Sleep(350 * time.Millisecond)
		synctest.Wait()
		cancel()
		<-done
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.calls["a"] != 3 || f.calls["b"] != 3 {
			t.Errorf("probes in 350ms at a 100ms interval: %v, want 3 each", f.calls)
		}
	})
}

// TestSyncSeesEveryChange checks that a consumer built while changes happen
// and caught up with Sync ends in the table's state.
func TestSyncSeesEveryChange(t *testing.T) {
	var mu sync.Mutex
	view := map[string]bool{}
	tab := New(Config{OnChange: func(a string, up bool) { mu.Lock(); view[a] = up; mu.Unlock() }})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				tab.ReportFailure(fmt.Sprint("ep", (i+j)%5), errors.New("refused"))
			}
		})
	}
	tab.Sync(func(up func(string) bool) {
		mu.Lock()
		defer mu.Unlock()
		for k := range 5 {
			a := fmt.Sprint("ep", k)
			view[a] = up(a)
		}
	})
	wg.Wait()
	for k := range 5 {
		a := fmt.Sprint("ep", k)
		if view[a] != tab.Up(a) {
			t.Errorf("%s: consumer sees %v, table %v", a, view[a], tab.Up(a))
		}
	}
}

// TestLogsChangesOnly: a dead endpoint probed many times logs one warning
// (with its failed probes), a probe line each at debug only, and one info
// line when it comes back.
func TestLogsChangesOnly(t *testing.T) {
	var buf bytes.Buffer
	f := &fakeProbe{fail: map[string]error{}, calls: map[string]int{}}
	tab := New(Config{Probe: f.probe, Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	tab.Probe(ctx, []string{"a"})
	f.set("a", errors.New("connection refused"))
	for range 10 {
		tab.Probe(ctx, []string{"a"})
	}
	f.set("a", nil)
	tab.Probe(ctx, []string{"a"})
	tab.Probe(ctx, []string{"a"})
	count := func(s string) int { return strings.Count(buf.String(), s) }
	if n := count("level=WARN"); n != 1 {
		t.Errorf("%d warnings for one endpoint going down, want 1:\n%s", n, buf.String())
	}
	if n := count(`level=WARN msg="endpoint down" endpoint=a failed_probes=2`); n != 1 {
		t.Errorf("the down line does not name the endpoint and its 2 failed probes:\n%s", buf.String())
	}
	if n := count(`level=INFO msg="endpoint up" endpoint=a`); n != 1 {
		t.Errorf("%d up lines, want 1 (the recovery):\n%s", n, buf.String())
	}
	if n := count(`level=DEBUG msg="endpoint probe" endpoint=a`); n != 13 {
		t.Errorf("%d debug probe lines, want 13 (one per probe):\n%s", n, buf.String())
	}
}
